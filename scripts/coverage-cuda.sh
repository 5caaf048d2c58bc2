#!/usr/bin/env bash
# Source coverage of src/device/cuda/ by the CI stand-in pass (.ci/run): the crate's own code
# is built with `-C instrument-coverage` (RUSTC_WORKSPACE_WRAPPER: dependencies are built as
# usual) into target/coverage/, then scripts/test-cuda-standin.sh runs the given cargo test
# arguments (default: those of .ci/run) on the stand-in, and llvm-cov (rustup component
# llvm-tools-preview) reports lines / functions / regions of src/device/cuda/*.rs.
#
#   scripts/coverage-cuda.sh                  # the .ci/run stand-in pass
#   scripts/coverage-cuda.sh --lib --test ops # any other selection of test targets
#   scripts/coverage-cuda.sh --report-only    # the report again, from the last run's profiles
#
# Writes target/coverage/cuda-report.txt (per file: lines / functions / regions covered, the
# union over every test binary of the run, unit-test modules left out; then the functions
# never entered and the uncovered line ranges; scripts/coverage_summary.py) and
# target/coverage/cuda-annotated.txt (llvm-cov show: the source with each line's count).
# Needs nvcc (scripts/install-nvcc.sh). Does not change what test-cuda-standin.sh does.
set -euo pipefail

# Invoked by cargo as the workspace rustc wrapper: instrument the crate's own code only.
if [[ "${QUADRA_COVERAGE_WRAP:-}" == 1 && $# -gt 0 && "$(basename "$1")" == rustc* ]]; then
  exec "$@" -C instrument-coverage
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin"
if [[ ! -x "$BIN/llvm-cov" || ! -x "$BIN/llvm-profdata" ]]; then
  echo "coverage-cuda: no llvm-cov in $BIN; run: rustup component add llvm-tools-preview" >&2
  exit 1
fi
report_only=0
if [[ "${1:-}" == --report-only ]]; then
  report_only=1
  shift
fi
if [[ $# -eq 0 ]]; then
  set -- --lib --test ops --test device --test train -- --skip train_resume
fi
# the cargo arguments before `--` (the target selection), for the --no-run build
build_args=()
for a in "$@"; do
  [[ "$a" == -- ]] && break
  build_args+=("$a")
done

export CARGO_TARGET_DIR="$ROOT/target/coverage"
export QUADRA_COVERAGE_WRAP=1
export RUSTC_WORKSPACE_WRAPPER="$ROOT/scripts/coverage-cuda.sh"
export QUADRA_REQUIRE_NVCC=1
OUT="$CARGO_TARGET_DIR"
PROF="$OUT/profraw"
mkdir -p "$OUT"

# Build first (the build script is instrumented too: its profile goes elsewhere), and
# collect every executable the tests may run: test binaries and the crate's bins.
LLVM_PROFILE_FILE="$OUT/build-%p-%m.profraw" \
  cargo test --no-run --message-format=json "${build_args[@]}" >"$OUT/build.json"
# llvm-cov takes the first binary positionally, the others with -object
objects=()
while IFS= read -r exe; do
  [[ ${#objects[@]} -gt 0 ]] && objects+=(-object)
  objects+=("$exe")
done < <(sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' "$OUT/build.json" | sort -u)
if [[ ${#objects[@]} -eq 0 ]]; then
  echo "coverage-cuda: no executables built" >&2
  exit 1
fi

rc=0
if [[ $report_only == 0 ]]; then
  rm -rf "$PROF"
  mkdir -p "$PROF"
  set +e
  LLVM_PROFILE_FILE="$PROF/%p-%m.profraw" scripts/test-cuda-standin.sh "$@" | tee "$OUT/tests.log"
  rc=${PIPESTATUS[0]}
  set -e
fi

"$BIN/llvm-profdata" merge -sparse "$PROF"/*.profraw -o "$OUT/cuda.profdata"
sources=(src/device/cuda/*.rs)
# One export per binary: the lib's unit-test binary is a separate compilation of the crate
# (its functions have other symbol names), and llvm-cov given both at once mixes them up.
# Every integration-test binary links the same instrumented rlib, so each one's export
# already carries the counts of all their runs (the merged profile is keyed by function).
rm -rf "$OUT/export"
mkdir -p "$OUT/export"
for exe in "${objects[@]}"; do
  [[ "$exe" == -object ]] && continue
  "$BIN/llvm-cov" export -instr-profile="$OUT/cuda.profdata" "$exe" "${sources[@]}" \
    >"$OUT/export/$(basename "$exe").json"
done
{
  echo "# scripts/coverage-cuda.sh $*"
  echo "# test-cuda-standin.sh: $(grep -E "^[0-9]+ passed, [0-9]+ failed$" "$OUT/tests.log" 2>/dev/null | tail -n1); $(find "$PROF" -name "*.profraw" | wc -l) profiles"
  python3 scripts/coverage_summary.py "${sources[@]}" -- "$OUT"/export/*.json
} | tee "$OUT/cuda-report.txt"
# the annotated source (line counts) as one integration-test binary sees it
for exe in "${objects[@]}"; do
  case "$exe" in */deps/quadra-* | -object) continue ;; esac
  "$BIN/llvm-cov" show -instr-profile="$OUT/cuda.profdata" "$exe" --use-color=false \
    "${sources[@]}" >"$OUT/cuda-annotated.txt"
  break
done
echo "coverage-cuda: $OUT/cuda-report.txt, $OUT/cuda-annotated.txt" >&2
exit "$rc"
