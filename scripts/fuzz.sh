#!/usr/bin/env bash
# Fuzz the parsers of untrusted bytes (fuzz/: checkpoint, spec_json, config_toml, idx, cifar,
# request) with libFuzzer through cargo-fuzz, each for SECONDS (default 60), starting from the
# committed seeds (fuzz/seeds/TARGET). Any crash, panic, abort, leak of the allocation limits
# or timeout fails the run and leaves the input in fuzz/artifacts/TARGET/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# No sanitizer (-s none): the stable toolchain has none, and the targets are safe Rust over
# the library (the emulator's C++ is not reached). Each run is under a 3 GiB address-space
# limit, below libFuzzer's 4 GiB malloc/RSS limits: an input that makes the library allocate
# more than the machine can give must be refused by its own size checks (an allocation that
# fails aborts, and is reported as a crash).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(checkpoint spec_json config_toml idx cifar request)
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
# cargo-fuzz passes -Z flags only for sanitizers; coverage instrumentation is stable codegen
cargo fuzz build -s none --release
summary=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log=$(mktemp)
  if ! prlimit --as=$((3 << 30)) "fuzz/target/x86_64-unknown-linux-gnu/release/$t" \
      "fuzz/corpus/$t" "fuzz/seeds/$t" -max_total_time="$secs" -rss_limit_mb=4096 \
      -malloc_limit_mb=4096 -timeout=20 -artifact_prefix="fuzz/artifacts/$t/" \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: target $t failed (input in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  summary+=("$t: $execs executions in ${secs}s, $cov, no crash")
  rm -f "$log"
done
printf 'fuzz: %s\n' "${summary[@]}"
