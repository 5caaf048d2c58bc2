#!/usr/bin/env bash
# The GPU pass of the whole test suite on the CUDA stand-in (cuda/standin/README.md):
# builds target/cuda-standin/{libcuda.so.1,libcublas.so.13}, puts them on the loader path
# and runs `cargo test` over every target with QUADRA_TEST_CUDA=1, so every test that takes
# a device also runs on cuda:0 — src/device/cuda.rs through real cudarc, the embedded nvcc
# fatbin and the stand-in driver. Ends with the line `N passed, M failed` (the sum of
# cargo's `test result:` lines); exits non-zero when any test failed.
#
#   scripts/test-cuda-standin.sh [cargo test args…]     e.g. -- --test-threads=1
#
# Needs nvcc (scripts/install-nvcc.sh, as CI has): without the fatbin cuda:0 is
# unavailable and every GPU test fails. Environment: QUADRA_STANDIN_TRACE=FILE writes the
# stand-in's counters at each process exit (the last test binary wins);
# QUADRA_STANDIN_MEMORY_MIB sets the device's capacity (default 8192).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TERM_COLOR=never
export QUADRA_REQUIRE_NVCC=1 # no fatbin, no cuda:0: make a missing nvcc a build error

cuda/standin/build.sh "$ROOT/target/cuda-standin" >&2
export LD_LIBRARY_PATH="$ROOT/target/cuda-standin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The tests that need the stand-in itself (its trace: tests/device/cuda_budget.rs) are
# #[ignore]d in other runs; here they run too.
args=("$@")
case " $* " in
  *" -- "*) args+=(--include-ignored) ;;
  *) args+=(-- --include-ignored) ;;
esac

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
QUADRA_TEST_CUDA=1 cargo test --no-fail-fast "${args[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s
read -r passed failed < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$log" |
  awk '{p += $1; f += $2} END {print p + 0, f + 0}')
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "cargo test exited with status $rc (a build error or a crashed test binary)"
fi
echo "$passed passed, $failed failed"
exit "$rc"
