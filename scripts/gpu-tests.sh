#!/usr/bin/env bash
# Every test binary of the crate, built here (with the pinned nvcc, so the CUDA kernels are
# in them) and run on a GPU machine that has the CUDA driver but no Rust and no network.
#
#   scripts/gpu-tests.sh build [DIR]   # here: build + bundle into DIR (default out/gpu-bundle)
#                                      # and DIR.tar.xz (~13 MB) to carry
#   tar -xJf out/gpu-bundle.tar.xz -C out && out/gpu-bundle/run.sh [BINARY [TEST-FILTER...]]
#                                      # there, from the repository root: run every binary
#                                      # twice (QUADRA_TEST_CUDA=1, then as `cargo test` does)
#
# Test binaries: lib-quadra, bin-*, and one per test crate tests/<crate>/main.rs (ops,
# device, models, train, data, cli, serve, convert), each holding one module per topic
# (e.g. ops's emu_layers): `run.sh ops emu_layers::` runs only that module.
#
# The bundle holds the test binaries and quadra-train/quadra-bench (debug info stripped),
# a manifest and run.sh. The binaries carry the absolute paths of the build
# (env!("CARGO_MANIFEST_DIR") for tests/fixtures, env!("CARGO_BIN_EXE_quadra-train")):
# run.sh therefore runs from a copy of the repository (the fixtures come from its tests/)
# and, when the build path does not exist there, links it to that copy and puts the bundled
# quadra-train at BUILD_ROOT/target/debug/. Doc tests are not binaries and are not bundled.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

usage() {
  sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
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
# debug info is most of a debug binary's size; the line tables of a panic are not needed
strip --strip-debug "$OUT"/tests/* "$OUT"/bin/*

{
  echo "build_root=$ROOT"
  echo "git_rev=$(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!out' || echo -dirty)"
  echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cuda_archs=${CUDA_ARCHS:-80,90}"
  echo "nvcc=$("$NVCC" --version | tail -n 1)"
} >"$OUT/manifest.txt"

cat >"$OUT/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs every bundled test binary twice: with QUADRA_TEST_CUDA=1 (the GPU checks run on
# cuda:0 and FAIL when it is unusable) and without (as `cargo test` runs them: emulator and
# CPU). Run it from a copy of the repository (for tests/fixtures), e.g. the repository root:
#   out/gpu-bundle/run.sh [FILTER [TEST-FILTER...]]
#     FILTER: only binaries whose name contains it (ops, device, train, ...);
#     TEST-FILTER: passed to each binary (test names containing it, e.g. emu_layers::)
# QUADRA_REPO overrides the repository root; MODES="gpu emu" picks the passes.
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
# (on the build machine itself the real build outputs are there already: leave them)
if [[ "$BUILD_ROOT" != "$REPO" ]]; then
  mkdir -p "$BUILD_ROOT/target/debug" 2>/dev/null
  for p in "$B"/bin/*; do
    cp -f "$p" "$BUILD_ROOT/target/debug/" 2>/dev/null \
      || echo "run.sh: cannot place $(basename "$p") in $BUILD_ROOT/target/debug" >&2
  done
fi

# cuBLAS: the runtime dlopens libcublas.so.13 or .12; help the loader find a toolkit's or a
# pip wheel's copy when it is not on the default path.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so\.1[23]'; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda-*/lib64 /usr/local/cuda/targets/*/lib \
           $(python3 -c 'import nvidia, os; [print(os.path.join(p, x, "lib")) for p in nvidia.__path__ for x in ("cublas", "cu13")]' 2>/dev/null); do
    if compgen -G "$d/libcublas.so.1[23]*" >/dev/null; then
      export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      echo "cuBLAS from $d"
      break
    fi
  done
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
  || echo "nvidia-smi: not available"

cd "$REPO"
export CARGO_MANIFEST_DIR="$BUILD_ROOT" RUST_BACKTRACE=1
LOGS="${LOGS:-$B/logs}"
mkdir -p "$LOGS"
declare -a rows
fails=0
for mode in $MODES; do
  for t in "$B"/tests/*; do
    name="$(basename "$t")"
    [[ -n "$FILTER" && "$name" != *"$FILTER"* ]] && continue
    log="$LOGS/$mode-$name.log"
    start=$SECONDS
    if [[ "$mode" == gpu ]]; then
      QUADRA_TEST_CUDA=1 "$t" ${TEST_ARGS[@]+"${TEST_ARGS[@]}"} >"$log" 2>&1
    else
      env -u QUADRA_TEST_CUDA "$t" ${TEST_ARGS[@]+"${TEST_ARGS[@]}"} >"$log" 2>&1
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
  echo "$fails run(s) FAILED"
  exit 1
fi
echo "all runs passed"
RUN
chmod +x "$OUT/run.sh"

# One archive to carry to the GPU machine: the binaries share most of their code, so xz
# with a dictionary larger than one binary shrinks ~160 MB to ~13 MB (unpacking needs
# ~300 MB of memory).
echo "== $OUT.tar.xz" >&2
tar -C "$(dirname "$OUT")" -cf - "$(basename "$OUT")" | xz -T2 --lzma2=preset=1,dict=256MiB >"$OUT.tar.xz"
du -sh "$OUT" "$OUT.tar.xz" >&2
echo "$OUT: $(ls "$OUT/tests" | wc -l) test binaries, run.sh, manifest.txt" >&2
echo "on the GPU machine, from the repository root: tar -xJf ${OUT#"$ROOT"/}.tar.xz -C $(dirname "${OUT#"$ROOT"/}") && ${OUT#"$ROOT"/}/run.sh" >&2
