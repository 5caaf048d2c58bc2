#!/usr/bin/env bash
# Builds, here, everything scripts/gpu-run.sh runs on a GPU machine, into ONE folder to
# carry there (the device tool's `carry`, 64 MiB at most; this script fails over 40 MiB):
#
#   scripts/gpu-bundle.sh [DIR]        # default out/gpu-run (out/ is ignored by git)
#
# DIR/tests.tar.xz   scripts/gpu-tests.sh build: every test binary, quadra-train and
#                    quadra-bench (debug), run.sh, cuda-libs.sh, manifest (unpacked there by
#                    gpu-run.sh into DIR/gpu-bundle/)
# DIR/quadra-bench   release, CUDA kernels in it (scripts/gpu-bench.sh build), debug info
#                    stripped: the benchmark and the compute-sanitizer step
# DIR/torch_ref.py   the PyTorch reference of the benchmark, copied from TORCH_REF (default
#                    ../shared/bench/torch_ref.py, else shared/bench/torch_ref.py): the GPU
#                    machine may have no ../shared
# DIR/manifest.txt   git revision, build time, nvcc, sizes
#
# Both builds use the pinned nvcc (scripts/install-nvcc.sh) with QUADRA_REQUIRE_NVCC=1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
case "${1:-}" in -h | --help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;; esac
DIR="${1:-out/gpu-run}"
case "$DIR" in /*) ;; *) DIR="$ROOT/$DIR" ;; esac
LIMIT_MIB=40

REF="${TORCH_REF:-}"
if [[ -z "$REF" ]]; then
  for r in ../shared/bench/torch_ref.py shared/bench/torch_ref.py; do
    [[ -f "$r" ]] && { REF="$r"; break; }
  done
fi
[[ -n "$REF" && -f "$REF" ]] || {
  echo "gpu-bundle: torch_ref.py not found (looked for TORCH_REF, ../shared/bench/torch_ref.py, shared/bench/torch_ref.py)" >&2
  exit 2
}

start=$SECONDS
rm -rf "$DIR"
mkdir -p "$DIR"
echo "== test bundle (scripts/gpu-tests.sh build)" >&2
scripts/gpu-tests.sh build "$DIR/gpu-bundle"
mv "$DIR/gpu-bundle.tar.xz" "$DIR/tests.tar.xz"
rm -rf "$DIR/gpu-bundle" # ~160 MB unpacked; gpu-run.sh unpacks tests.tar.xz there

echo "== release quadra-bench (scripts/gpu-bench.sh build)" >&2
scripts/gpu-bench.sh build >&2
cp -f out/gpu-bench/quadra-bench "$DIR/quadra-bench"
cp -f "$REF" "$DIR/torch_ref.py"

{
  echo "git_rev=$(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!out' || echo -dirty)"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "build_root=$ROOT"
  echo "nvcc=$(.cuda/bin/nvcc --version | tail -n 1)"
  echo "cuda_archs=${CUDA_ARCHS:-80,90}"
  echo "torch_ref=$REF sha256 $(sha256sum <"$DIR/torch_ref.py" | cut -d' ' -f1)"
  for f in tests.tar.xz quadra-bench torch_ref.py; do
    echo "size_$f=$(stat -c %s "$DIR/$f")"
  done
} >"$DIR/manifest.txt"

bytes="$(du -sb "$DIR" | cut -f1)"
mib="$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')"
ls -l "$DIR" >&2
echo "gpu-bundle: ${DIR#"$ROOT"/} is $mib MiB ($bytes bytes; limit $LIMIT_MIB MiB), built in $((SECONDS - start)) s"
if ((bytes > LIMIT_MIB * 1048576)); then
  echo "gpu-bundle: ${DIR#"$ROOT"/} is over $LIMIT_MIB MiB: it would not travel within the 64 MiB carry with the working tree" >&2
  exit 1
fi
echo "on the GPU machine, from the repository root: scripts/gpu-run.sh ${DIR#"$ROOT"/}"
