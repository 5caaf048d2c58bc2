#!/usr/bin/env bash
# Every test binary of the crate, built here (with the pinned nvcc, so the CUDA kernels are
# in them) and run on a GPU machine that has the CUDA driver but no Rust and no network.
#
#   scripts/gpu-tests.sh build [DIR]   # here: build + bundle into DIR (default out/gpu-bundle)
#                                      # and DIR.tar.xz (~13 MB) to carry
#   tar -xJf out/gpu-bundle.tar.xz -C out && out/gpu-bundle/run.sh [BINARY [TEST-FILTER...]]
#                                      # there, from the repository root: run every binary
#                                      # twice: the GPU pass (QUADRA_TEST_CUDA=1), then the
#                                      # emu pass, as CI runs them (GPU hidden, see below)
#
# Test binaries: lib-quadra, bin-*, and one per test crate tests/<crate>/main.rs (ops,
# device, models, train, data, cli, serve, convert), each holding one module per topic
# (e.g. ops's emu_layers): `run.sh ops emu_layers::` runs only that module.
#
# The bundle holds the test binaries and quadra-train/quadra-bench (debug info stripped),
# a manifest (with each program's sha256 as built and as stripped), cuda-libs.sh and run.sh.
# The binaries carry the absolute paths of the build (env!("CARGO_MANIFEST_DIR") for
# tests/fixtures, env!("CARGO_BIN_EXE_quadra-train")): run.sh therefore runs from a copy of
# the repository (the fixtures come from its tests/), links the build path to that copy when
# the build path does not exist there, and puts each bundled program at
# BUILD_ROOT/target/debug/ whenever the file there is absent or is not the bundle's (its
# sha256 is neither of the manifest's; a file that differs is moved aside to NAME.pre-bundle
# first). Doc tests are not binaries and are not bundled.
#
# The emu pass hides the GPU with CUDA_VISIBLE_DEVICES= (empty), which the NVIDIA driver (and
# the stand-in of cuda/standin/) honours: cuInit fails, so Device::auto() — the default
# `--device auto` of the `cli` crate's and train_resume's trainings — is the CPU there, as on
# CI, and not cuda:0 as in the GPU pass.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

usage() {
  sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 2
}

[[ "${1:-}" == "build" ]] || usage
OUT="${2:-out/gpu-bundle}"
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac

echo "== nvcc" >&2
NVCC="$(scripts/install-nvcc.sh)"
"$NVCC" --version | tail -n 2 >&2
export QUADRA_REQUIRE_NVCC=1 # a kernel that nvcc rejects fails the build

echo "== cargo test --no-run (CUDA_ARCHS=${CUDA_ARCHS:-80,90})" >&2
json="$(mktemp)"
trap 'rm -f "$json"' EXIT
cargo test --no-run --message-format=json-render-diagnostics >"$json"
cargo build --bins --message-format=json-render-diagnostics >>"$json"

rm -rf "$OUT"
mkdir -p "$OUT/tests" "$OUT/bin"
bin_sums="$(mktemp)"
trap 'rm -f "$json" "$bin_sums"' EXIT
# test binaries: name them after their target (lib → lib-quadra, bins → bin-NAME)
python3 - "$json" "$OUT" <<'PY'
import json, shutil, sys
src, out = sys.argv[1], sys.argv[2]
tests, bins = {}, {}
for line in open(src):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    kind = t["kind"][0]
    if m["profile"]["test"]:
        name = {"lib": "lib-" + t["name"], "bin": "bin-" + t["name"]}.get(kind, t["name"])
        tests[name] = m["executable"]
    elif kind == "bin":
        bins[t["name"]] = m["executable"]
for name, exe in sorted(tests.items()):
    shutil.copy2(exe, f"{out}/tests/{name}")
for name, exe in sorted(bins.items()):
    shutil.copy2(exe, f"{out}/bin/{name}")
print(f"{len(tests)} test binaries, {len(bins)} programs", file=sys.stderr)
PY
# run.sh tells the build's own programs (left in place) from other files by these sums
for p in "$OUT"/bin/*; do
  echo "bin_sha256_built_$(basename "$p")=$(sha256sum <"$p" | cut -d' ' -f1)"
done >"$bin_sums"
# debug info is most of a debug binary's size; the line tables of a panic are not needed
strip --strip-debug "$OUT"/tests/* "$OUT"/bin/*
for p in "$OUT"/bin/*; do
  echo "bin_sha256_$(basename "$p")=$(sha256sum <"$p" | cut -d' ' -f1)"
done >>"$bin_sums"
cp scripts/cuda-libs.sh "$OUT/cuda-libs.sh"

{
  echo "build_root=$ROOT"
  echo "git_rev=$(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!out' || echo -dirty)"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cuda_archs=${CUDA_ARCHS:-80,90}"
  echo "nvcc=$("$NVCC" --version | tail -n 1)"
  cat "$bin_sums"
} >"$OUT/manifest.txt"

cat >"$OUT/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs every bundled test binary twice: the "gpu" pass with QUADRA_TEST_CUDA=1 (the GPU
# checks run on cuda:0 and FAIL when it is unusable; `--device auto` is cuda:0) and the
# "emu" pass as CI runs them: without QUADRA_TEST_CUDA and with the GPU hidden
# (CUDA_VISIBLE_DEVICES= , honoured by the driver), so the emulator and the CPU only and
# `--device auto` is the CPU. Run it from a copy of the repository (for tests/fixtures):
#   out/gpu-bundle/run.sh [FILTER [TEST-FILTER...]]
#     FILTER: only binaries whose name contains it (ops, device, train, ...);
#     TEST-FILTER: passed to each binary (test names containing it, e.g. emu_layers::)
# QUADRA_REPO: the repository root (default: two folders above this script);
# MODES="gpu emu" picks the passes; SKIP="cli serve": binaries left out (a SKIP row each);
# LOGS: where the per-binary logs go (default logs/ here).
set -uo pipefail
B="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="${QUADRA_REPO:-$(cd "$B/../.." && pwd)}"
FILTER="${1:-}"
TEST_ARGS=("${@:2}")
MODES="${MODES:-gpu emu}"
BUILD_ROOT="$(sed -n 's/^build_root=//p' "$B/manifest.txt")"
cat "$B/manifest.txt"
echo "repository here: $REPO"

if [[ ! -d "$REPO/tests/fixtures" ]]; then
  echo "run.sh: $REPO/tests/fixtures is missing: run from a copy of the repository (or set QUADRA_REPO)" >&2
  exit 2
fi
# The binaries look for BUILD_ROOT/tests/fixtures and BUILD_ROOT/target/debug/quadra-train.
if [[ "$BUILD_ROOT" != "$REPO" ]]; then
  if [[ ! -e "$BUILD_ROOT" ]]; then
    mkdir -p "$(dirname "$BUILD_ROOT")" && ln -s "$REPO" "$BUILD_ROOT" \
      && echo "linked $BUILD_ROOT -> $REPO (the build's paths)" \
      || echo "run.sh: could not link $BUILD_ROOT -> $REPO: tests that read fixtures or run quadra-train will fail" >&2
  elif [[ ! -d "$BUILD_ROOT/tests/fixtures" ]]; then
    echo "run.sh: $BUILD_ROOT exists but is not a copy of the repository: fixture tests will fail" >&2
  fi
fi
# The CLI tests run BUILD_ROOT/target/debug/quadra-train: put the bundle's programs there
# unless the file there is the bundle's already (the build's own, or placed before).
mkdir -p "$BUILD_ROOT/target/debug" 2>/dev/null
for p in "$B"/bin/*; do
  name="$(basename "$p")"
  dest="$BUILD_ROOT/target/debug/$name"
  if [[ -e "$dest" ]]; then
    sum="$(sha256sum <"$dest" | cut -d' ' -f1)"
    if grep -qx "bin_sha256\(_built\)\{0,1\}_$name=$sum" "$B/manifest.txt"; then
      echo "$dest is the bundle's: left in place"
      continue
    fi
    # moved, not overwritten: it may be a hard link to cargo's own copy in target/debug/deps
    mv -f "$dest" "$dest.pre-bundle" \
      && echo "$dest is not the bundle's (sha256 $sum): moved to $dest.pre-bundle"
  fi
  cp "$p" "$dest" 2>/dev/null && echo "placed the bundle's $name at $dest" \
    || echo "run.sh: cannot place $name at $dest: the tests that run it will fail" >&2
done

# cuBLAS: the runtime dlopens libcublas.so.13 or .12 (cuda-libs.sh: where it looks)
# shellcheck source=/dev/null
source "$B/cuda-libs.sh"
quadra_cuda_libs || true
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
  || echo "nvidia-smi: not available"

cd "$REPO" || exit 2
export CARGO_MANIFEST_DIR="$BUILD_ROOT" RUST_BACKTRACE=1
LOGS="${LOGS:-$B/logs}"
mkdir -p "$LOGS"
declare -a rows
fails=0
ran=0
for mode in $MODES; do
  for t in "$B"/tests/*; do
    name="$(basename "$t")"
    [[ -n "$FILTER" && "$name" != *"$FILTER"* ]] && continue
    if [[ " ${SKIP:-} " == *" $name "* ]]; then
      rows+=("$(printf '%-4s %-4s %-26s %4ss  %s' "$mode" SKIP "$name" 0 "left out (SKIP)")")
      echo "${rows[-1]}"
      continue
    fi
    log="$LOGS/$mode-$name.log"
    start=$SECONDS
    ran=$((ran + 1))
    if [[ "$mode" == gpu ]]; then
      QUADRA_TEST_CUDA=1 "$t" ${TEST_ARGS[@]+"${TEST_ARGS[@]}"} >"$log" 2>&1
    else
      env -u QUADRA_TEST_CUDA CUDA_VISIBLE_DEVICES= "$t" ${TEST_ARGS[@]+"${TEST_ARGS[@]}"} >"$log" 2>&1
    fi
    rc=$?
    res="$(grep -E '^test result:' "$log" | tail -n 1 | sed 's/^test result: //; s/; finished.*//')"
    if [[ $rc -ne 0 ]]; then
      fails=$((fails + 1))
      status=FAIL
    else
      status=ok
    fi
    rows+=("$(printf '%-4s %-4s %-26s %4ss  %s' "$mode" "$status" "$name" "$((SECONDS - start))" "${res:-no result line (rc $rc), see $log}")")
    echo "${rows[-1]}"
  done
done
echo
echo "== summary ($(date -u +%H:%M:%S)); logs in $LOGS"
printf '%s\n' "${rows[@]}"
if [[ $fails -gt 0 ]]; then
  echo "$fails of $ran run(s) FAILED"
  exit 1
fi
if [[ $ran -eq 0 ]]; then
  echo "no test binary ran (FILTER '$FILTER', SKIP '${SKIP:-}', MODES '$MODES')"
  exit 1
fi
echo "all $ran runs passed"
RUN
chmod +x "$OUT/run.sh"

# One archive to carry to the GPU machine: the binaries share most of their code, so xz
# with a dictionary larger than one binary shrinks ~160 MB to ~13 MB (unpacking needs
# ~300 MB of memory).
echo "== $OUT.tar.xz" >&2
tar -C "$(dirname "$OUT")" -cf - "$(basename "$OUT")" | xz -T2 --lzma2=preset=1,dict=256MiB >"$OUT.tar.xz"
du -sh "$OUT" "$OUT.tar.xz" >&2
echo "$OUT: $(find "$OUT/tests" -type f | wc -l) test binaries, run.sh, manifest.txt, cuda-libs.sh" >&2
echo "on the GPU machine, from the repository root: tar -xJf ${OUT#"$ROOT"/}.tar.xz -C $(dirname "${OUT#"$ROOT"/}") && ${OUT#"$ROOT"/}/run.sh" >&2
