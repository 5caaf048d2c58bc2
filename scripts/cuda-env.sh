#!/usr/bin/env bash
# Environment for the nvcc that scripts/install-nvcc.sh put in .cuda/:
#   source scripts/cuda-env.sh        # in bash: exports into the current shell
#   eval "$(scripts/cuda-env.sh)"     # from any shell: prints the exports
# CUDA_HOME points at the toolkit folder of the wheels (bin/nvcc, include/ with
# cuda_runtime.h, crt/ and cccl/, nvvm/ with cicc and libdevice); nvcc.profile there
# resolves those folders itself, so nothing else is needed. build.rs finds .cuda/bin/nvcc on
# its own; this is for running nvcc by hand.
_quadra_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ ! -x "$_quadra_root/.cuda/bin/nvcc" ]]; then
  echo "cuda-env: $_quadra_root/.cuda/bin/nvcc is missing: run scripts/install-nvcc.sh" >&2
  return 1 2>/dev/null || exit 1
fi
_quadra_home="$(cd "$_quadra_root/.cuda/toolkit" && pwd -P)"
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  export CUDA_HOME="$_quadra_home"
  export PATH="$_quadra_root/.cuda/bin:$PATH"
else
  printf 'export CUDA_HOME=%q\n' "$_quadra_home"
  printf 'export PATH=%q:"$PATH"\n' "$_quadra_root/.cuda/bin"
fi
unset _quadra_root _quadra_home
