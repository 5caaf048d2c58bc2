#!/usr/bin/env bash
# Faults a training run must survive, re-run by hand (needs root for the tmpfs mounts):
#  1. kill -9 at random moments (TRIALS, default 5): each killed run is resumed with
#     `--resume DIR` until it completes; its steps.jsonl (every step's loss as bits) and
#     the tensors of its last checkpoint must equal an uninterrupted run's, byte for byte.
#  2. disk full: the run's --out on a tmpfs of each SIZE (KiB); the run must fail with a
#     clear error (exit 1, no panic), every checkpoint it left must load, and after the
#     disk is given room, `--resume DIR` must finish with the uninterrupted run's results.
#   scripts/faults.sh [TRIALS] [SIZES...]      (builds target/release/quadra-train)
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-5}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(600 1500 3000)
cargo build --release --quiet --bin quadra-train
bin=target/release/quadra-train
work=$(mktemp -d)
trap 'umount "$work/disk" 2>/dev/null || true; rm -rf "$work"' EXIT
args=(train --model qcnn --epochs 2 --batch-size 32 --train-samples 640 --test-samples 64
      --save-every 3 --seed 5 --device cpu)
# the tensors of a checkpoint (its data section; the header holds timings)
tensors() { python3 -c '
import sys, struct
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]
sys.stdout.buffer.write(b[8 + n:])' "$1" | sha256sum | cut -d" " -f1; }
"$bin" "${args[@]}" --output "$work/ref" >/dev/null
ref_steps=$(sha256sum <"$work/ref/steps.jsonl")
ref_last=$(tensors "$work/ref/last.safetensors")
same() { # DIR: the run in DIR equals the reference
  [ "$(sha256sum <"$1/steps.jsonl")" = "$ref_steps" ] &&
    [ "$(tensors "$1/last.safetensors")" = "$ref_last" ]; }
for t in $(seq 1 "$trials"); do
  d="$work/kill-$t"
  "$bin" "${args[@]}" --output "$d" >/dev/null 2>&1 &
  pid=$!
  delay=$(python3 -c "import random; print(round(random.uniform(0.3, 2.5), 2))")
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  steps=$(wc -l <"$d/steps.jsonl" 2>/dev/null || echo 0)
  if ls "$d"/*.safetensors >/dev/null 2>&1; then
    "$bin" "${args[@]}" --output "$d" --resume "$d" >/dev/null
  else # killed before its first checkpoint: nothing to resume, start over
    "$bin" "${args[@]}" --output "$d" --force >/dev/null
  fi
  if same "$d"; then verdict=identical; else verdict=DIFFERENT; fi
  echo "kill -9 trial $t: killed after ${delay}s at step $steps, resumed: $verdict"
  [ "$verdict" = identical ]
done
mkdir -p "$work/disk"
for kib in "${sizes[@]}"; do
  mount -t tmpfs -o size="${kib}k" tmpfs "$work/disk"
  set +e
  err=$("$bin" "${args[@]}" --output "$work/disk/run" 2>&1 >/dev/null)
  rc=$?
  set -e
  left=$(ls "$work/disk/run" 2>/dev/null | tr '\n' ' ')
  for ck in "$work/disk/run"/*.safetensors; do
    [ -e "$ck" ] || continue
    "$bin" info "$ck" >/dev/null || { echo "disk ${kib} KiB: $ck does not load" >&2; exit 1; }
  done
  # give the run room: copy it to a disk with space, resume there
  cp -a "$work/disk/run" "$work/roomy-$kib"
  umount "$work/disk"
  if [ "$rc" -eq 0 ]; then
    echo "disk ${kib} KiB: the run fit"
    continue
  fi
  if [ "$rc" -ne 1 ] || grep -q panicked <<<"$err"; then
    echo "disk ${kib} KiB: exit $rc: $err" >&2; exit 1
  fi
  if ls "$work/roomy-$kib"/*.safetensors >/dev/null 2>&1; then
    "$bin" "${args[@]}" --output "$work/roomy-$kib" --resume "$work/roomy-$kib" >/dev/null
  else
    "$bin" "${args[@]}" --output "$work/roomy-$kib" --force >/dev/null
  fi
  if same "$work/roomy-$kib"; then verdict=identical; else verdict=DIFFERENT; fi
  echo "disk ${kib} KiB: failed cleanly ($(tail -1 <<<"$err" | cut -c1-120)); left: $left; resumed: $verdict"
  [ "$verdict" = identical ]
done
