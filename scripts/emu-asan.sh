#!/usr/bin/env bash
# Runs the emulator's test suite with AddressSanitizer on the C++ side (the kernels of
# cuda/*.cu and the emulator runtime), then checks that ASan catches a planted
# out-of-bounds read in a kernel.
#
#   scripts/emu-asan.sh
#
# How: QUADRA_EMU_SANITIZE=address makes build.rs compile the emulator library with
# -fsanitize=address and link libasan; the test binaries run with libasan preloaded (a cargo
# runner), so ASan's malloc also guards the Rust-allocated buffers the kernels read and
# write. The fiber switches are annotated for ASan (__sanitizer_start/finish_switch_fiber).
# Rust code itself is not instrumented (that needs nightly -Zsanitizer=address).
# Builds into target/asan (override with CARGO_TARGET_DIR) to leave target/ as it is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CXX_BIN="${CXX:-c++}"
LIBASAN="$("$CXX_BIN" -print-file-name=libasan.so)"
if [[ ! -f "$LIBASAN" ]]; then
  echo "emu-asan: libasan.so not found via $CXX_BIN -print-file-name (install gcc's libasan)" >&2
  exit 1
fi
HOST="$(rustc -vV | sed -n 's/^host: //p')"
RUNNER_VAR="CARGO_TARGET_$(echo "$HOST" | tr 'a-z-' 'A-Z_')_RUNNER"

export QUADRA_EMU_SANITIZE=address
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/asan}"
export "$RUNNER_VAR=env LD_PRELOAD=$LIBASAN"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:check_initialization_order=1:strict_string_checks=1}"

echo "== emu-asan 1/2: emulator test suites under ASan ($LIBASAN)"
start=$(date +%s)
# every tests/<crate>/emu_*.rs module: the kernel tests and the layer/training parity
# tests, whose tensors live in emulated device memory allocated with exact sizes under ASan
# (no pool rounding). Each module is a filter `emu_x::` on the test binary <crate>.
source "$(dirname "$0")/emu-suites.sh"
cargo test "${crates[@]}" -- "${filters[@]}"
echo "== emu-asan 1/2: clean ($(($(date +%s) - start)) s including the build)"

echo "== emu-asan 2/2: planted out-of-bounds read in emu_test_oob_read_f32 (must be caught)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if QUADRA_EMU_ASAN_PLANTED=1 cargo test --test ops emu_kernels::planted_out_of_bounds_read -- --exact \
  --test-threads=1 >"$log" 2>&1; then
  cat "$log"
  echo "emu-asan: FAILED: the planted out-of-bounds read was not reported" >&2
  exit 1
fi
if ! grep -q "ERROR: AddressSanitizer: heap-buffer-overflow" "$log"; then
  cat "$log"
  echo "emu-asan: FAILED: the test failed, but not with an ASan heap-buffer-overflow report" >&2
  exit 1
fi
grep -E "ERROR: AddressSanitizer|READ of size|#[0-3] |is located|SUMMARY" "$log" | head -n 12
echo "== emu-asan 2/2: ASan caught the planted read: OK"
