#!/usr/bin/env bash
# Runs the emulator's test suites with racecheck on and every launch under several fiber
# schedules (cuda/emu/README.md, "Racecheck and schedules"), then prints a summary.
#
#   scripts/emu-racecheck.sh [SEED]        (SEED of the random schedule, default 1)
#
# How: QUADRA_EMU_RACECHECK=1 makes every launch run the kernel's racecheck copy (built
# into the normal emulator library by build.rs: no rebuild, the same test binaries), which
# reports shared-memory hazards between barriers and overlapping non-atomic global writes as
# launch errors. QUADRA_EMU_SCHEDULE=default,reverse,random:SEED runs each launch three
# times on the same inputs — fibers in thread order, reversed, and in a seeded random
# order at every sweep — and fails it when the bytes it writes differ from the first run's.
# A test that would pass in the default mode fails on either. The planted races of
# tests/ops/emu_racecheck.rs run in the same pass and check that each is still caught.
#
# The suites: every tests/<crate>/emu_*.rs module (as scripts/emu-asan.sh), by filter
# `emu_x::` on the test binary <crate>, except emu_train::training_steps_match_cpu: whole
# model trainings (qresnet10 included) compared with the CPU, 54 s alone on 2 cores and
# three times that with every launch run thrice, whose kernels the other tests launch too
# (the summary lists every kernel of cuda/*.cu that no test launched).
# RACECHECK_SKIP="name ..." replaces that skip list ("" runs everything).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never

seed="${1:-1}"
if ! [[ "$seed" =~ ^[0-9]+$ ]]; then
  echo "emu-racecheck: SEED must be a non-negative integer, got \`$seed\`" >&2
  exit 2
fi
schedules="default,reverse,random:$seed"

source "$(dirname "$0")/emu-suites.sh"

skips=()
for t in ${RACECHECK_SKIP-training_steps_match_cpu}; do skips+=(--skip "$t"); done

start=$(date +%s)
cargo test --no-run "${crates[@]}" 2>&1 | grep -vE '^\s+(Compiling|Executable)' || true
built=$(date +%s)

report="$(mktemp)"
log="$(mktemp)"
trap 'rm -f "$report" "$log"' EXIT
echo "== emu-racecheck: ${crates[*]} -- ${filters[*]} ${skips[*]}"
echo "== racecheck on, schedules $schedules"
set +e
QUADRA_EMU_RACECHECK=1 QUADRA_EMU_SCHEDULE="$schedules" QUADRA_EMU_RACECHECK_REPORT="$report" \
  cargo test --no-fail-fast "${crates[@]}" -- "${filters[@]}" "${skips[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
end=$(date +%s)

read -r passed failed < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$log" |
  awk '{p += $1; f += $2} END {print p + 0, f + 0}')
# "checked <launches> <kernel>" per kernel and test binary: sum per kernel.
awk '$1 == "checked" {n[$3] += $2} END {for (k in n) print n[k], k}' "$report" | sort -k2 >"$report.sum"
launches=$(awk '{s += $1} END {print s + 0}' "$report.sum")
kernels=$(awk '$2 !~ /^emu_test_/ {t++; if ($1 > 0) l++} END {print l + 0 "/" t + 0}' "$report.sum")
unlaunched=$(awk '$2 !~ /^emu_test_/ && $1 == 0 {printf "%s ", $2}' "$report.sum")
rm -f "$report.sum"

echo "== emu-racecheck summary"
echo "   tests:     $passed passed, $failed failed"
echo "   launches:  $launches checked (each run under $schedules with racecheck on)"
echo "   kernels:   $kernels of cuda/*.cu launched by these tests${unlaunched:+; not launched: $unlaunched}"
if [ "$failed" -gt 0 ]; then
  echo "   errors (first 20 distinct):"
  grep -oE "emulator: kernel .*" "$log" | sort -u | head -n 20 | sed 's/^/     /' || true
fi
echo "   time:      $((end - built)) s for the tests, $((built - start)) s to build them"
if [ "$rc" -ne 0 ]; then
  echo "emu-racecheck: FAILED (cargo test exited with status $rc)" >&2
  exit "$rc"
fi
echo "== emu-racecheck: OK"
