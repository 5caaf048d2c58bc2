#!/usr/bin/env bash
# Quadra vs the PyTorch reference, same machine, same sitting: one training step of a zoo
# model (SGD, CIFAR shape) on N threads, images/s and bytes kept for backward.
#   scripts/bench-cpu.sh [MODEL] [BATCH] [THREADS]      (PYTHON: a python with torch)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-qresnet14}; batch=${2:-64}; threads=${3:-2}
py=${PYTHON:-python3}
ref=${TORCH_REF:-../shared/bench/torch_ref.py}
cargo build --release --quiet --bin quadra-bench
ours=$(target/release/quadra-bench --model "$model" --batch "$batch" --threads "$threads" --steps 5 --warmup 2 --backprop both)
theirs=$("$py" "$ref" bench --model "$model" --batch "$batch" --threads "$threads" --steps 5)
echo "$ours"
echo "$theirs"
"$py" - "$theirs" <<PY
import json, sys
t = json.loads(sys.argv[1])
for line in """$ours""".splitlines():
    q = json.loads(line)
    print(f"{q['backprop']:>9}: {q['images_per_s']:.1f} img/s vs torch {t['images_per_s']:.1f} "
          f"(speed ratio {q['images_per_s']/t['images_per_s']:.2f}x); saved for backward "
          f"{q['saved_for_backward_mib']:.1f} MiB vs torch {t['saved_for_backward_mib']:.1f} MiB "
          f"(ratio {q['saved_for_backward_mib']/t['saved_for_backward_mib']:.2f})")
PY
