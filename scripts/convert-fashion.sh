#!/usr/bin/env bash
# The auto-builder end to end on Fashion-MNIST, through quadra-train as a user runs it:
#
#   1. train the first-order `cnn`                                   (train --model cnn)
#   2. convert its convs to quadralib-bn with function-preserving weights, calibrate the
#      BatchNorm statistics the conversion cannot know, check the outputs against the
#      original on the whole test set                      (convert --checkpoint --check)
#   3. evaluate both (equal accuracy), fine-tune the QDNN and a first-order control alike
#                                                                    (eval, train --init)
#   4. rank the QDNN's quadratic layers (importance), reduce to a MAC budget (reduce),
#      retrain the reduced spec from scratch (train --model reduced.json) and fine-tune the
#      reduced weights (train --init); parameters and MACs of every model (cost)
#
#   scripts/convert-fashion.sh [--epochs N] [--finetune-epochs N] [--budget-macs B] [--out DIR]
#
# Defaults: 1 epoch everywhere, budget 50% of the QDNN's MACs, output in runs/convert-fashion
# (restarted). About 4 minutes on 2 CPU cores at 1 epoch (measured: cnn 86.1%, converted 86.1%
# with max |logit diff| 2.9e-6, fine-tuned QDNN 88.5% vs first-order control 88.2%). Not part of the test suite.
# Needs Fashion-MNIST (/usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist, or
# the IDX files under $QUADRA_DATA_DIR/fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."

epochs=1
ft_epochs=1
budget=50%
out=runs/convert-fashion
while [ $# -gt 0 ]; do
    case "$1" in
        --epochs) epochs=$2; shift 2 ;;
        --finetune-epochs) ft_epochs=$2; shift 2 ;;
        --budget-macs) budget=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

cargo build --release --bin quadra-train
qt=target/release/quadra-train
mkdir -p "$out"
log="$out/summary.txt"
: > "$log"
say() { echo "$*" | tee -a "$log"; }
acc() { # checkpoint [eval args…] → test accuracy in %
    local ck=$1; shift
    "$qt" eval --checkpoint "$ck" "$@" --json | sed -n 's/.*"accuracy":\([0-9.eE+-]*\).*/\1/p' |
        awk '{ printf "%.2f", 100 * $1 }'
}
timed() { # label command… : run, print wall seconds
    local label=$1; shift
    local t0; t0=$(date +%s.%N)
    "$@"
    say "$(awk -v a="$t0" -v b="$(date +%s.%N)" -v l="$label" 'BEGIN { printf "time %-28s %7.1f s", l, b - a }')"
}
fm=(--dataset fashion-mnist)

say "== 1. first-order cnn, $epochs epoch(s)"
timed "train cnn" "$qt" train --model cnn "${fm[@]}" --epochs "$epochs" --output "$out/cnn" --force
say "cnn test accuracy: $(acc "$out/cnn/last.safetensors")%"

say "== 2. convert conv1, conv2 to quadralib-bn, calibrate on 2048 training samples, check on the test set"
timed "convert" "$qt" convert --checkpoint "$out/cnn/last.safetensors" --neuron quadralib-bn \
    --select 'conv*' --seed 7 --calibrate 2048 --check 10000 -o "$out/qdnn.safetensors" \
    > "$out/convert.txt"
tee -a "$log" < "$out/convert.txt"

say "== 3. eval before fine-tuning, then fine-tune $ft_epochs epoch(s) (lr 0.02 cosine)"
say "original  $(acc "$out/cnn/last.safetensors")%   converted $(acc "$out/qdnn.safetensors" "${fm[@]}")%"
timed "fine-tune qdnn" "$qt" train --init "$out/qdnn.safetensors" "${fm[@]}" --epochs "$ft_epochs" \
    --lr 0.02 --out "$out/qdnn-ft" --force
timed "fine-tune cnn (control)" "$qt" train --init "$out/cnn/last.safetensors" "${fm[@]}" \
    --epochs "$ft_epochs" --lr 0.02 --out "$out/cnn-ft" --force
say "fine-tuned: qdnn $(acc "$out/qdnn-ft/last.safetensors")%   first-order control $(acc "$out/cnn-ft/last.safetensors")%"

say "== 4. importance on the test set, reduce to $budget of the MACs, retrain"
"$qt" importance --checkpoint "$out/qdnn-ft/last.safetensors" "${fm[@]}" --samples 10000 \
    --json > "$out/importance.json"
"$qt" importance --checkpoint "$out/qdnn-ft/last.safetensors" "${fm[@]}" --samples 10000 | tee -a "$log"
"$qt" reduce --checkpoint "$out/qdnn-ft/last.safetensors" --importance "$out/importance.json" \
    --budget-macs "$budget" -o "$out/reduced.json" --save-checkpoint "$out/reduced.safetensors" | tee -a "$log"
say "reduced (QDNN weights, no training): $(acc "$out/reduced.safetensors" "${fm[@]}")%"
timed "retrain reduced (scratch)" "$qt" train --model "$out/reduced.json" "${fm[@]}" \
    --epochs "$epochs" --out "$out/reduced-scratch" --force
timed "fine-tune reduced" "$qt" train --init "$out/reduced.safetensors" "${fm[@]}" \
    --epochs "$ft_epochs" --lr 0.02 --out "$out/reduced-ft" --force
say "reduced retrained from scratch: $(acc "$out/reduced-scratch/last.safetensors")%   reduced fine-tuned: $(acc "$out/reduced-ft/last.safetensors")%"

say "== cost (params, MACs per sample)"
"$qt" convert --model cnn --neuron quadralib-bn --select 'conv*' -o "$out/qdnn.json" > /dev/null
cost() { # name, cost args…
    local name=$1; shift
    local j; j=$("$qt" cost "$@" --json)
    say "$(printf '%-8s params %8s  MACs %10s' "$name" \
        "$(grep -o '"total_params":[0-9]*' <<<"$j" | cut -d: -f2)" \
        "$(grep -o '"total_macs":[0-9]*' <<<"$j" | cut -d: -f2)")"
}
cost cnn --model cnn
cost qdnn --spec "$out/qdnn.json"
cost reduced --spec "$out/reduced.json"
say "summary in $log"
