#!/usr/bin/env bash
# The one command for a GPU machine (driver R580+, no Rust, no network), run from the
# repository root of a copy of the working tree, with what scripts/gpu-bundle.sh built here:
#
#   scripts/gpu-run.sh [DIR]          # DIR: the bundle folder (default out/gpu-run)
#
# Four parts, each under its own `timeout` (seconds; with the unpacking, UNPACK_S=15, and
# each timeout's 5 s kill grace the defaults sum to 535 s, under 9 minutes):
#   tests      TESTS_S=280  the GPU pass of every bundled test binary (run.sh, MODES=gpu:
#                           QUADRA_TEST_CUDA=1); SKIP="cli ..." leaves binaries out (said in
#                           the summary), TESTS_FILTER / TESTS_ARGS go to run.sh
#   bench      BENCH_S=110  scripts/gpu-bench.sh run against PyTorch (DIR/torch_ref.py,
#                           DIR/quadra-bench; BENCH_STEPS=5 after BENCH_WARMUP=2, batch 256)
#   memcheck   MEMCHECK_S=45, racecheck  RACECHECK_S=60: compute-sanitizer --tool memcheck /
#                           racecheck of one training step per backprop mode:
#                           quadra-bench --device cuda --model qcnn --batch 2 --steps 1 --warmup 0
# Logs go to $OUT when set (the device tool sets it), else out/gpu-logs: env.txt (GPU, driver,
# budgets, the bundle's manifest, where cuBLAS, torch and compute-sanitizer came from), tests.log (run.sh: one row per binary),
# tests-binaries.log (every binary's output), bench.log, memcheck.log, racecheck.log, and
# summary.txt: one line per part, PASSED / FAILED / NOT RUN, why, seconds. A part that did
# not run is never PASSED. Exits 1 when a part FAILED, else 0.
#
# Environment: PARTS (default "tests bench memcheck racecheck": a part left out is NOT RUN),
# PYTHON (python with torch; default python3), SANITIZER (compute-sanitizer; default: PATH,
# then /usr/local/cuda*/bin), TOTAL_S (540: the budgets must sum below it).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
case "${1:-}" in -h | --help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;; esac
DIR="${1:-out/gpu-run}"
case "$DIR" in /*) ;; *) DIR="$ROOT/$DIR" ;; esac
LOG="${OUT:-$ROOT/out/gpu-logs}"
mkdir -p "$LOG" || { echo "gpu-run: cannot create the log folder $LOG" >&2; exit 2; }
LOG="$(cd "$LOG" && pwd)"

UNPACK_S="${UNPACK_S:-15}"
TESTS_S="${TESTS_S:-280}"
BENCH_S="${BENCH_S:-110}"
MEMCHECK_S="${MEMCHECK_S:-45}"
RACECHECK_S="${RACECHECK_S:-60}"
TOTAL_S="${TOTAL_S:-540}"
GRACE=5
for v in UNPACK_S TESTS_S BENCH_S MEMCHECK_S RACECHECK_S TOTAL_S; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "gpu-run: $v=${!v} is not a number of seconds" >&2; exit 2; }
done
budget=$((UNPACK_S + TESTS_S + BENCH_S + MEMCHECK_S + RACECHECK_S + 5 * GRACE))
if ((budget > TOTAL_S)); then
  echo "gpu-run: UNPACK_S+TESTS_S+BENCH_S+MEMCHECK_S+RACECHECK_S (+5 s kill grace each) = $budget s is over TOTAL_S=$TOTAL_S" >&2
  exit 2
fi
PY="${PYTHON:-python3}"
PARTS="${PARTS:-tests bench memcheck racecheck}"
for p in $PARTS; do
  [[ " tests bench memcheck racecheck " == *" $p "* ]] \
    || { echo "gpu-run: PARTS: '$p' is not one of tests bench memcheck racecheck" >&2; exit 2; }
done
wanted() { [[ " $PARTS " == *" $1 "* ]]; }
SUMMARY="$LOG/summary.txt"
: >"$SUMMARY"
failed=0
t0=$SECONDS

# summary line: part, PASSED|FAILED|NOT RUN, seconds, why
record() {
  [[ "$2" == FAILED ]] && failed=1
  printf '%-10s %-8s %4s s  %s\n' "$1" "$2" "$3" "$4" | tee -a "$SUMMARY"
}
# why a timed command stopped, for the summary
why_rc() { # rc, budget
  case "$1" in
    124 | 137) echo "timed out after $2 s" ;;
    *) echo "exit status $1" ;;
  esac
}

# ---- environment ------------------------------------------------------------------------
{
  echo "gpu-run: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname 2>/dev/null), $(nproc) CPUs, repository $ROOT, bundle $DIR"
  echo "budgets (s): unpack $UNPACK_S, tests $TESTS_S, bench $BENCH_S, memcheck $MEMCHECK_S, racecheck $RACECHECK_S (sum with kill graces $budget, limit $TOTAL_S)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  else
    echo "nvidia-smi: not on PATH"
  fi
  echo "LD_LIBRARY_PATH before: ${LD_LIBRARY_PATH:-}"
  echo "-- $DIR/manifest.txt"
  cat "$DIR/manifest.txt" 2>&1
} >"$LOG/env.txt"
# cuBLAS for every part (the test bundle's run.sh, the benchmark and the sanitizer runs)
# shellcheck source=scripts/cuda-libs.sh
source "$ROOT/scripts/cuda-libs.sh"
quadra_cuda_libs >>"$LOG/env.txt" 2>&1
cat "$LOG/env.txt"

# ---- tests: the GPU pass of the bundle ----------------------------------------------------
start=$SECONDS
B="$DIR/gpu-bundle"
if ! wanted tests; then
  unpacked="not in PARTS"
elif [[ ! -x "$B/run.sh" || "$DIR/tests.tar.xz" -nt "$B/run.sh" ]]; then
  if [[ ! -f "$DIR/tests.tar.xz" ]]; then
    unpacked="no $DIR/tests.tar.xz (build it with scripts/gpu-bundle.sh)"
  else
    rm -rf "$B"
    if timeout -k "$GRACE" "$UNPACK_S" tar -xJf "$DIR/tests.tar.xz" -C "$DIR" 2>>"$LOG/env.txt" \
      && [[ -x "$B/run.sh" ]]; then
      touch "$B/run.sh"
      unpacked=ok
      echo "unpacked $DIR/tests.tar.xz in $((SECONDS - start)) s" | tee -a "$LOG/env.txt"
    else
      unpacked="unpacking $DIR/tests.tar.xz failed (see env.txt)"
    fi
  fi
else
  unpacked=ok
fi
if [[ "$unpacked" != ok ]]; then
  record tests "NOT RUN" $((SECONDS - start)) "$unpacked"
else
  tlogs="$DIR/tests-logs"
  rm -rf "$tlogs"
  read -r -a targs <<<"${TESTS_ARGS:-}"
  echo "== tests: GPU pass of $B (budget $TESTS_S s${SKIP:+; skipping: $SKIP})"
  LOGS="$tlogs" MODES=gpu QUADRA_REPO="$ROOT" SKIP="${SKIP:-}" \
    timeout -k "$GRACE" "$TESTS_S" "$B/run.sh" "${TESTS_FILTER:-}" ${targs[@]+"${targs[@]}"} \
    >"$LOG/tests.log" 2>&1
  rc=$?
  secs=$((SECONDS - start))
  # every binary's output in one file (the device tool brings back at most 8 files)
  for f in "$tlogs"/*.log; do
    [[ -e "$f" ]] || continue
    echo "======== $(basename "$f" .log)"
    cat "$f"
  done 2>/dev/null | head -c 15000000 >"$LOG/tests-binaries.log"
  # binaries that finished (a row of run.sh, printed as it goes and again in its summary)
  # and those started but cut off by the timeout (a log, no row)
  done_names="$(awk '$1 == "gpu" && ($2 == "ok" || $2 == "FAIL") {print $3}' "$LOG/tests.log" | sort -u)"
  ran="$(grep -c . <<<"$done_names")"
  cut=""
  for f in "$tlogs"/gpu-*.log; do
    [[ -e "$f" ]] || continue
    n="$(basename "$f" .log)"
    n="${n#gpu-}"
    grep -qx "$n" <<<"$done_names" || cut+="$n "
  done
  read -r np nf ni < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' \
    "$tlogs"/*.log 2>/dev/null | awk '{p += $1; f += $2; i += $3} END {print p + 0, f + 0, i + 0}')
  failing="$(awk '$2 == "FAIL" {print $3}' "$LOG/tests.log" | sort -u | tr '\n' ' ')"
  skipped="$(awk '$2 == "SKIP" {print $3}' "$LOG/tests.log" | sort -u | tr '\n' ' ')"
  counts="$ran binaries ran${cut:+ (cut off: ${cut% })}, $np tests passed, $nf failed, $ni ignored${skipped:+; skipped binaries: ${skipped% }}${TESTS_FILTER:+; only binaries matching $TESTS_FILTER}${TESTS_ARGS:+; test args: $TESTS_ARGS}"
  tail -n 20 "$LOG/tests.log"
  if [[ $rc -eq 0 && $ran -gt 0 ]]; then
    record tests PASSED "$secs" "GPU pass (QUADRA_TEST_CUDA=1): $counts"
  elif [[ $rc -eq 0 ]]; then
    record tests FAILED "$secs" "no test binary ran (see tests.log)"
  else
    record tests FAILED "$secs" "$(why_rc $rc "$TESTS_S"): $counts${failing:+; failing: ${failing% }}"
  fi
fi

# ---- bench: quadra-bench against PyTorch --------------------------------------------------
start=$SECONDS
if ! wanted bench; then
  record bench "NOT RUN" 0 "not in PARTS"
elif ! torch_v="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)" \
  || ! echo "torch: $torch_v ($PY)" >>"$LOG/env.txt"; then
  echo "bench: '$PY -c \"import torch\"' failed" >"$LOG/bench.log"
  record bench "NOT RUN" $((SECONDS - start)) "no torch ($PY cannot import torch; PYTHON names the python)"
elif ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "bench: torch $torch_v: torch.cuda.is_available() is False" >"$LOG/bench.log"
  record bench "NOT RUN" $((SECONDS - start)) "torch $torch_v sees no CUDA GPU"
elif [[ ! -x "$DIR/quadra-bench" || ! -f "$DIR/torch_ref.py" ]]; then
  record bench "NOT RUN" $((SECONDS - start)) "no $DIR/quadra-bench or $DIR/torch_ref.py (scripts/gpu-bundle.sh builds them)"
else
  steps="${BENCH_STEPS:-5}"
  warm="${BENCH_WARMUP:-2}"
  echo "== bench: torch $torch_v, $steps steps after $warm (budget $BENCH_S s)"
  TORCH_REF="$DIR/torch_ref.py" QUADRA_BENCH="$DIR/quadra-bench" PYTHON="$PY" STEPS="$steps" \
    WARMUP="$warm" timeout -k "$GRACE" "$BENCH_S" scripts/gpu-bench.sh run >"$LOG/bench.log" 2>&1
  rc=$?
  cat "$LOG/bench.log"
  # the table's rows: model mode img/s torch ratio ...
  ratios="$(awk '$3 ~ /^[0-9.]+$/ && $5 ~ /x$/ {printf "%s%s %s %s img/s = %s torch", sep, $1, $2, $3, $5; sep = "; "}' "$LOG/bench.log")"
  if [[ $rc -eq 0 && -n "$ratios" ]]; then
    record bench PASSED $((SECONDS - start)) "torch $torch_v, $steps steps: $ratios"
  elif [[ $rc -eq 0 ]]; then
    record bench FAILED $((SECONDS - start)) "gpu-bench.sh printed no comparison row (see bench.log)"
  else
    record bench FAILED $((SECONDS - start)) "gpu-bench.sh $(why_rc $rc "$BENCH_S")${ratios:+; rows: $ratios} (see bench.log)"
  fi
fi

# ---- compute-sanitizer: memcheck and racecheck of one training step ----------------------
SAN="${SANITIZER:-}"
if [[ -z "$SAN" ]]; then
  SAN="$(command -v compute-sanitizer 2>/dev/null)"
  for s in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer; do
    [[ -z "$SAN" && -x "$s" ]] && SAN="$s"
  done
fi
if [[ -n "$SAN" && -x "$SAN" ]]; then
  echo "compute-sanitizer: $SAN, $("$SAN" --version 2>&1 | tail -n 1)" >>"$LOG/env.txt"
else
  echo "compute-sanitizer: none found" >>"$LOG/env.txt"
fi
step=("$DIR/quadra-bench" --device cuda --model qcnn --batch 2 --steps 1 --warmup 0 --backprop both)
for tool in memcheck racecheck; do
  start=$SECONDS
  log="$LOG/$tool.log"
  if ! wanted "$tool"; then
    record "$tool" "NOT RUN" 0 "not in PARTS"
    continue
  fi
  if [[ -z "$SAN" || ! -x "$SAN" ]]; then
    echo "$tool: no compute-sanitizer (SANITIZER=${SANITIZER:-}, PATH, /usr/local/cuda*/bin)" >"$log"
    record "$tool" "NOT RUN" 0 "no compute-sanitizer (not on PATH nor in /usr/local/cuda*/bin; SANITIZER names it)"
    continue
  fi
  if [[ ! -x "$DIR/quadra-bench" ]]; then
    record "$tool" "NOT RUN" 0 "no $DIR/quadra-bench (scripts/gpu-bundle.sh builds it)"
    continue
  fi
  budget_s=$MEMCHECK_S
  [[ $tool == racecheck ]] && budget_s=$RACECHECK_S
  echo "== $tool: $SAN --tool $tool ${step[*]#"$ROOT"/} (budget $budget_s s)"
  # 86: the sanitizer found errors (the program's own failures keep their status)
  timeout -k "$GRACE" "$budget_s" "$SAN" --tool "$tool" --error-exitcode 86 --print-limit 50 \
    "${step[@]}" >"$log" 2>&1
  rc=$?
  tail -n 5 "$log"
  found="$(grep -E '(ERROR|RACECHECK) SUMMARY' "$log" | sed 's/^=* *//' | tr '\n' ' ')"
  steps_done="$(grep -c '"images_per_s"' "$log")"
  if [[ $rc -eq 0 && -n "$found" && $steps_done -eq 2 ]]; then
    record "$tool" PASSED $((SECONDS - start)) "${found% } (qcnn, batch 2, one step in each backprop mode)"
  elif [[ $rc -eq 86 ]]; then
    record "$tool" FAILED $((SECONDS - start)) "the sanitizer found errors: ${found% } (see $tool.log)"
  elif [[ $rc -eq 0 ]]; then
    record "$tool" FAILED $((SECONDS - start)) "no sanitizer summary line or not both steps ran ($steps_done of 2 JSON lines; see $tool.log)"
  else
    record "$tool" FAILED $((SECONDS - start)) "$(why_rc $rc "$budget_s")${found:+: ${found% }} (see $tool.log)"
  fi
done

echo "== summary ($((SECONDS - t0)) s in all; logs in $LOG)"
cat "$SUMMARY"
exit $failed
