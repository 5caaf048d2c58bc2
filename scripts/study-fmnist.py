#!/usr/bin/env python3
"""Accuracy per parameter on Fashion-MNIST: quadratic CNNs against first-order twins of equal
parameter count (within 5 %), several seeds each, one recipe for all; plus the quadratic
optimizer's effect at one budget. Reproduces the README's study table and plot.

    cargo build --release
    python3 scripts/study-fmnist.py --epochs 3 --seeds 0 1 2 --jobs 2 --out runs/study

Each run is `quadra-train train` on the full Fashion-MNIST (60 000 training, 10 000 test
images; Debian: apt-get install dataset-fashion-mnist) in its own folder, one thread each,
`--jobs` at a time; a run whose folder already holds its final epoch is not run again, so an
interrupted study continues where it stopped. The table reports the test accuracy after the
last epoch (never the best epoch: that would select on the test set). The recipe was fixed
before any run and not tuned: no choice was made on test accuracy.

Writes OUT/results.tsv (one line per run), OUT/table.md (mean ± sample std per row) and
OUT/accuracy-vs-params.png (needs matplotlib; skipped with a message without it).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

# (row label, zoo model, extra train flags). Pairs share a budget; the widths were chosen by
# parameter count alone (scripts/torch-fixtures.py lists them beside PyTorch's counts).
ROWS = [
    ("qcnn (quadratic)", "qcnn", []),
    ("cnn-30k (first order)", "cnn-30k", []),
    ("qcnn, no quadratic optimizer", "qcnn", ["--no-quadratic-optimizer", "--no-relinear"]),
    ("qcnn-100k (quadratic)", "qcnn-100k", []),
    ("cnn-100k (first order)", "cnn-100k", []),
]

# One recipe for every row: SGD with momentum 0.9, lr 0.05 on a cosine schedule to 0,
# weight decay 5e-4, batch 64, normalization only (no augmentation), as
# configs/qcnn-fashion-mnist.toml.
RECIPE = [
    "--dataset", "fashion-mnist", "--train-samples", "60000", "--test-samples", "10000",
    "--optimizer", "sgd", "--lr", "0.05", "--final-lr", "0", "--schedule", "cosine",
    "--momentum", "0.9", "--weight-decay", "5e-4", "--batch-size", "64",
    "--augment", "default", "--device", "cpu", "--workers", "1",
]


def run_dir(out, model, extra, seed):
    tag = model + ("-noqopt" if extra else "")
    return os.path.join(out, f"{tag}-s{seed}")


def epochs_of(d):
    try:
        with open(os.path.join(d, "metrics.jsonl")) as f:
            return [json.loads(l) for l in f if l.strip()]
    except FileNotFoundError:
        return []


def last_epoch(d):
    lines = epochs_of(d)
    return lines[-1] if lines else None


def params_of(exe, checkpoint):
    r = subprocess.run([exe, "info", checkpoint, "--json"], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["params"]


def one(exe, out, epochs, model, extra, seed):
    d = run_dir(out, model, extra, seed)
    done = last_epoch(d)
    if done and done.get("epoch") == epochs:
        return d, done, False
    cmd = [exe, "train", "--model", model, "--epochs", str(epochs), "--seed", str(seed), "--out", d, "--force", *RECIPE, *extra]
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    with open(d + ".log", "w") as log:
        r = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f"run failed ({d}.log): {' '.join(cmd)}")
    return d, last_epoch(d), True


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="runs/study")
    p.add_argument("--exe", default=os.path.join(here, "..", "target", "release", "quadra-train"))
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    jobs = [(label, model, extra, s) for (label, model, extra) in ROWS for s in a.seeds]
    with ThreadPoolExecutor(a.jobs) as pool:
        futs = [(j, pool.submit(one, a.exe, a.out, a.epochs, j[1], j[2], j[3])) for j in jobs]
        results = []
        for (label, model, extra, s), f in futs:
            d, m, ran = f.result()
            secs = sum(e["seconds"] for e in epochs_of(d))
            results.append((label, model, s, m["test_acc"], secs))
            print(f"{label:32s} seed {s}: test {100 * m['test_acc']:.2f} % ({secs:.0f} s{'' if ran else ', done before'})", flush=True)
    wall = time.time() - t0
    params = {model: params_of(a.exe, os.path.join(run_dir(a.out, model, extra, a.seeds[0]), "last.safetensors")) for (_, model, extra) in ROWS}

    with open(os.path.join(a.out, "results.tsv"), "w") as f:
        f.write("row\tmodel\tparams\tseed\ttest_acc\tseconds\n")
        for label, model, s, acc, secs in results:
            f.write(f"{label}\t{model}\t{params[model]}\t{s}\t{acc:.4f}\t{secs:.0f}\n")
    rows = []
    for label, model, _ in ROWS:
        accs = [100 * r[3] for r in results if r[0] == label]
        sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        rows.append((label, model, params[model], statistics.mean(accs), sd, accs))
    table = [
        f"| model | parameters | test accuracy, mean ± std over {len(a.seeds)} seeds (%) | per seed |",
        "|---|---|---|---|",
    ]
    for label, model, n, mean, sd, accs in rows:
        table.append(f"| {label} | {n:,} | {mean:.2f} ± {sd:.2f} | {' '.join(f'{x:.2f}' for x in accs)} |")
    table.append("")
    cpu = sum(r[4] for r in results)
    table.append(f"{a.epochs} epochs per run, one thread each; the runs' epochs took {cpu / 3600:.1f} h in all ({a.jobs} at a time); this invocation's wall time {wall / 60:.0f} min.")
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write("\n".join(table) + "\n")
    print("\n".join(table))

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
    for kind, colour, marker in (("(quadratic)", "tab:red", "o"), ("(first order)", "tab:blue", "s")):
        pts = [r for r in rows if r[0].endswith(kind)]
        ax.errorbar([r[2] for r in pts], [r[3] for r in pts], yerr=[r[4] for r in pts], color=colour, marker=marker, capsize=4, label=kind.strip("()"))
    abl = [r for r in rows if "no quadratic optimizer" in r[0]]
    if abl:
        ax.errorbar([r[2] * 1.03 for r in abl], [r[3] for r in abl], yerr=[r[4] for r in abl], color="tab:gray", marker="^", capsize=4, linestyle="none", label="quadratic, no quadratic optimizer")
    ax.set_xscale("log")
    ticks = sorted({round(r[2], -4) for r in rows})  # the budgets; pairs differ by < 5 %
    ax.set_xticks(ticks, [f"≈{t // 1000} K" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Fashion-MNIST, {a.epochs} epochs, mean ± std over {len(a.seeds)} seeds")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(a.out, "accuracy-vs-params.png")
    fig.savefig(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
