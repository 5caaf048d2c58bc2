#!/usr/bin/env bash
# Quadra vs the PyTorch reference on a GPU: full training steps (SGD, CIFAR shape) of
# qresnet14 and qvgg7 at batch 256, both back-propagation modes, same machine and sitting.
#
#   scripts/gpu-bench.sh build          # here: release quadra-bench with the CUDA kernels
#                                       # (pinned nvcc) → out/gpu-bench/quadra-bench
#   scripts/gpu-bench.sh [run]          # on the GPU machine, from the repository root
#
# Environment: PYTHON (a python with torch, default python3), TORCH_REF (default
# ../shared/bench/torch_ref.py, else shared/bench/torch_ref.py), QUADRA_BENCH (the binary;
# default out/gpu-bench/quadra-bench, else target/release/quadra-bench), MODELS
# ("qresnet14 qvgg7"), BATCH (256), STEPS (20), WARMUP (3), DEVICE (cuda).
# cuBLAS: when the loader does not find libcublas/libcublasLt, scripts/cuda-libs.sh looks in
# a CUDA toolkit and in PYTHON's pip wheels (nvidia/cu13/lib, nvidia/cublas/lib, torch/lib).
# Prints each engine's JSON line, then per model and mode: images/s and the ratio to
# PyTorch, MiB kept for backward, peak device MiB. Exits 1 when a run fails.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ "${1:-run}" == "build" ]]; then
  set -e
  NVCC="$(scripts/install-nvcc.sh)"
  "$NVCC" --version | tail -n 1
  QUADRA_REQUIRE_NVCC=1 cargo build --release --bin quadra-bench
  mkdir -p out/gpu-bench
  cp -f target/release/quadra-bench out/gpu-bench/
  strip --strip-debug out/gpu-bench/quadra-bench
  ls -l out/gpu-bench/quadra-bench
  exit 0
fi
[[ "${1:-run}" == "run" ]] || { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

PY="${PYTHON:-python3}"
REF="${TORCH_REF:-}"
if [[ -z "$REF" ]]; then
  for r in ../shared/bench/torch_ref.py shared/bench/torch_ref.py; do
    [[ -f "$r" ]] && { REF="$r"; break; }
  done
fi
BIN="${QUADRA_BENCH:-}"
if [[ -z "$BIN" ]]; then
  for b in out/gpu-bench/quadra-bench target/release/quadra-bench; do
    [[ -x "$b" ]] && { BIN="$b"; break; }
  done
fi
[[ -n "$REF" && -f "$REF" ]] || { echo "gpu-bench: torch_ref.py not found (set TORCH_REF)" >&2; exit 2; }
[[ -n "$BIN" && -x "$BIN" ]] || { echo "gpu-bench: no quadra-bench (run scripts/gpu-bench.sh build, or set QUADRA_BENCH)" >&2; exit 2; }
MODELS="${MODELS:-qresnet14 qvgg7}"
BATCH="${BATCH:-256}"
STEPS="${STEPS:-20}"
WARMUP="${WARMUP:-3}"
DEVICE="${DEVICE:-cuda}"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
if [[ "$DEVICE" == cuda* ]]; then
  # shellcheck source=scripts/cuda-libs.sh
  source "$ROOT/scripts/cuda-libs.sh"
  quadra_cuda_libs || true
fi
echo "torch: $REF ($PY); quadra: $BIN; batch $BATCH, $STEPS steps after $WARMUP warm-up"
status=0
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
for m in $MODELS; do
  if t="$("$PY" "$REF" bench --model "$m" --batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --device "$DEVICE" 2>&1 | tail -n 1)" && [[ "$t" == "{"* ]]; then
    echo "$t"
    echo "torch $m $t" >>"$results"
  else
    echo "torch $m FAILED: $t"
    status=1
  fi
  if q="$("$BIN" --device "$DEVICE" --model "$m" --batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --backprop both 2>&1)"; then
    echo "$q"
    while IFS= read -r line; do echo "quadra $m $line" >>"$results"; done <<<"$q"
  else
    echo "quadra $m FAILED: $(printf '%s\n' "$q" | grep -v '^ \|^Stack backtrace\|^$' | head -n 3)"
    status=1
  fi
done

"$PY" - "$results" <<'PY'
import json, sys
torch, ours = {}, []
for line in open(sys.argv[1]):
    engine, model, js = line.split(" ", 2)
    try:
        d = json.loads(js)
    except ValueError:
        continue
    if engine == "torch":
        torch[model] = d
    else:
        ours.append((model, d))
print()
print(f"{'model':<10} {'mode':<9} {'img/s':>9} {'torch':>9} {'ratio':>6}  {'saved MiB':>9} {'torch':>9}  {'peak MiB':>9} {'torch':>9}")
for model, q in ours:
    t = torch.get(model)
    if not t:
        print(f"{model:<10} {q['backprop']:<9} {q['images_per_s']:>9.1f}  (no torch result)")
        continue
    print(f"{model:<10} {q['backprop']:<9} {q['images_per_s']:>9.1f} {t['images_per_s']:>9.1f} "
          f"{q['images_per_s'] / t['images_per_s']:>5.2f}x  {q['saved_for_backward_mib']:>9.1f} "
          f"{t['saved_for_backward_mib']:>9.1f}  {q.get('peak_tracked_mib', float('nan')):>9.1f} "
          f"{t.get('peak_device_mib', float('nan')):>9.1f}")
if not ours:
    print("(no quadra results: see the errors above)")
PY
exit $status
