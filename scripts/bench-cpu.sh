#!/usr/bin/env bash
# Quadra's CPU engine beside the PyTorch reference, same machine, same sitting, interleaved:
# for each zoo model, training steps (stored and recompute, against PyTorch's eager step)
# and eval-mode inference (batch-64 throughput, batch-1 latency), several rounds; prints
# a markdown table of the medians of per-round ratios (> 1: Quadra faster) and their
# geometric means. Raw JSON lines go to $LOG (default target/bench-cpu.jsonl).
#   scripts/bench-cpu.sh [MODEL...]        (default: the whole zoo)
#   env: PYTHON (a python with torch), ROUNDS (3), THREADS (2), STEPS (3), TORCH_REF
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
"$py" -c "import torch" 2>/dev/null || { echo "bench-cpu.sh: $py has no torch (set PYTHON)" >&2; exit 2; }
cargo build --release --quiet --bin quadra-bench
exec "$py" scripts/bench_cpu.py "$@"
