#!/usr/bin/env python3
"""Run exported ONNX models in onnxruntime (the parity test of tests/models/onnx_export.rs).

    onnx-check.py MODEL.onnx IN.safetensors OUT.safetensors [MODEL2 IN2 OUT2 ...]

For each triple: every tensor of IN (float32, (N, *input)) goes through MODEL's graph input
`input`; its output `logits` is written to OUT under the same name. With the `onnx` package
installed, each model first passes `onnx.checker.check_model(full_check=True)` (the checker
and shape inference); without it that check is skipped and said so.

Needs: onnxruntime, numpy, safetensors.
"""
import sys

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file, save_file

try:
    import onnx
except ImportError:
    onnx = None


def main(args):
    if not args or len(args) % 3:
        sys.exit(__doc__)
    for model, inp, out in zip(args[0::3], args[1::3], args[2::3]):
        checked = "onnx not installed: checker skipped"
        if onnx is not None:
            onnx.checker.check_model(onnx.load(model), full_check=True)
            checked = f"onnx {onnx.__version__} checker passed"
        # default session options: the graph optimizations (Conv+BatchNormalization fusion,
        # …) a user's session applies
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        logits = {
            k: np.ascontiguousarray(sess.run(["logits"], {"input": x})[0])
            for k, x in load_file(inp).items()
        }
        save_file(logits, out)
        print(f"{model}: onnxruntime {ort.__version__}, {len(logits)} batches; {checked}")


if __name__ == "__main__":
    main(sys.argv[1:])
