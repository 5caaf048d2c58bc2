"""Driver of scripts/bench-cpu.sh: runs target/release/quadra-bench and torch_ref.py
alternately (Quadra first in even rounds, PyTorch first in odd ones), each a fresh process,
and reports medians of per-round ratios. Ratios are PyTorch time / Quadra time, so > 1
means Quadra is faster; recompute is compared with PyTorch's (stored) eager step."""
import json, math, os, statistics, subprocess, sys, time

ZOO = ["qresnet14", "qresnet10", "resnet20", "resnet32", "resnet56", "qvgg7", "qvgg13",
       "vgg11", "vgg13", "vgg16", "vgg19", "mobilenet", "qmobilenet", "cnn", "cnn-wide",
       "qcnn", "mlp"]
rounds = int(os.environ.get("ROUNDS", 3))
threads = os.environ.get("THREADS", "2")
steps = os.environ.get("STEPS", "3")
ref = os.environ.get("TORCH_REF", "../shared/bench/torch_ref.py")
log = os.environ.get("LOG", "target/bench-cpu.jsonl")
models = sys.argv[1:] or ZOO


def train_batch(m):
    return 32 if ("vgg" in m or "mobilenet" in m) else 64


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def ours(kind, m):
    b = train_batch(m) if kind == "train" else 64
    cmd = ["target/release/quadra-bench", "--mode", kind, "--model", m, "--batch", str(b),
           "--threads", threads, "--steps", steps, "--warmup", "1"]
    return run(cmd)


def theirs(kind, m):
    b = train_batch(m) if kind == "train" else 64
    cmd = [sys.executable, ref, "bench" if kind == "train" else "infer", "--model", m,
           "--batch", str(b), "--threads", threads, "--steps", steps, "--warmup", "1",
           "--device", "cpu"]
    return run(cmd)


# per model: lists of per-round ratios
cols = ["stored", "recompute", "infer64", "latency1"]
ratios = {m: {c: [] for c in cols} for m in models}
saved = {}
t_start = time.time()
with open(log, "a") as f:
    for r in range(rounds):
        for m in models:
            res = {}
            for kind in ("train", "infer"):
                order = [("q", ours), ("t", theirs)]
                if r % 2:
                    order.reverse()
                for who, fn in order:
                    res[(who, kind)] = fn(kind, m)
                    for line in res[(who, kind)]:
                        f.write(json.dumps({"round": r, **line}) + "\n")
            t = res[("t", "train")][0]
            q = {line["backprop"]: line for line in res[("q", "train")]}
            for mode in ("stored", "recompute"):
                ratios[m][mode].append(q[mode]["images_per_s"] / t["images_per_s"])
            qi, ti = res[("q", "infer")][0], res[("t", "infer")][0]
            ratios[m]["infer64"].append(qi["images_per_s"] / ti["images_per_s"])
            ratios[m]["latency1"].append(ti["batch1_latency_ms_median"] / qi["batch1_latency_ms_median"])
            saved[m] = (q["stored"]["saved_for_backward_mib"], q["recompute"]["saved_for_backward_mib"],
                        t["saved_for_backward_mib"])
            print(f"round {r + 1}/{rounds} {m}: " + ", ".join(
                f"{c} {ratios[m][c][-1]:.2f}" for c in cols), file=sys.stderr, flush=True)

print(f"\n{rounds} rounds, {threads} threads, {steps} timed steps per run, "
      f"{time.time() - t_start:.0f} s; median of per-round ratios, PyTorch time / Quadra time\n")
print("| model | train batch | train stored | train recompute | infer b64 | latency b1 | saved MiB stored / recompute / PyTorch |")
print("|---|---|---|---|---|---|---|")
meds = {c: [] for c in cols}
for m in models:
    row = []
    for c in cols:
        v = statistics.median(ratios[m][c])
        meds[c].append(v)
        row.append(f"{v:.2f}")
    s = saved[m]
    print(f"| {m} | {train_batch(m)} | " + " | ".join(row) + f" | {s[0]:.1f} / {s[1]:.1f} / {s[2]:.1f} |")
geo = [math.exp(sum(map(math.log, meds[c])) / len(meds[c])) for c in cols]
print("| geometric mean | | " + " | ".join(f"{g:.2f}" for g in geo) + " | |")
