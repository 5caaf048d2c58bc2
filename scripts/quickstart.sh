#!/usr/bin/env bash
# Quickstart: train the quadratic CNN `qcnn` on Fashion-MNIST for 2 epochs on the CPU.
#
#   scripts/quickstart.sh            # output in runs/quickstart (restarted if it exists)
#
# Needs Debian's `dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist), or the
# four IDX files under $QUADRA_DATA_DIR/fashion-mnist.
set -euo pipefail
cd "$(dirname "$0")/.."

data=/usr/share/datasets/fashion-mnist
if [ ! -e "$data/train-images-idx3-ubyte.gz" ] && [ -z "${QUADRA_DATA_DIR:-}" ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing dataset-fashion-mnist (apt-get)…"
        apt-get update -q && apt-get install -y -q dataset-fashion-mnist
    else
        echo "Fashion-MNIST is missing. Install it with:" >&2
        echo "    sudo apt-get install dataset-fashion-mnist" >&2
        echo "(or put the four IDX files in \$QUADRA_DATA_DIR/fashion-mnist) and run this again." >&2
        exit 1
    fi
fi

out=runs/quickstart
cargo run --release --bin quadra-train -- train --model qcnn --dataset fashion-mnist \
    --epochs 2 --output "$out" --force

acc=$(tail -n 1 "$out/metrics.jsonl" | sed -n 's/.*"test_acc":\([0-9.eE+-]*\).*/\1/p')
echo "final test accuracy: $(awk -v a="$acc" 'BEGIN { printf "%.2f%%", 100 * a }')  (metrics: $out/metrics.jsonl, chart: $out/chart.png)"
