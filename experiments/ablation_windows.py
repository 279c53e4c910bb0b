#!/usr/bin/env python3
"""Final validation loss of every finished run of a sweep, re-evaluated at several windows.

    python3 experiments/ablation_windows.py runs/ablation_tiny [--windows 256,512,1024]
        [--bin build/speedrun] [--val GLOB] [--threads 1]

A run validates with its own last window: 512 for the window warmup (64 -> 512), 256 for
the fixed window. This separates what a variant learned from the window it is evaluated
with: every final model (OUT/<variant>/seed<K>/model_step<N>.safetensors) is evaluated by
`speedrun eval` on the same validation tokens as in training, at each window, and the
table gives mean ± std over the seeds per variant and window. Standard library only.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys


def stats(xs):
    n = len(xs)
    m = sum(xs) / n
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    return f"{m:.4f}" + (f" ± {s:.4f}" if s is not None else "")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir")
    p.add_argument("--windows", default="256,512,1024")
    p.add_argument("--bin", default="build/speedrun")
    p.add_argument("--val", default="data/kjv_bpe2048/val32768/kjv_val_*.bin")
    p.add_argument("--threads", default="1")
    a = p.parse_args()
    windows = [int(w) for w in a.windows.split(",")]
    record = json.load(open(os.path.join(a.sweep_dir, "sweep.json")))
    runs = {}
    for r in record["runs"]:
        runs.setdefault(r["variant"], []).append(r)
    print("| variant | " + " | ".join(f"window {w}" for w in windows) + " |")
    print("| --- |" + " ---: |" * len(windows))
    for name, group in runs.items():
        losses = {w: [] for w in windows}
        for r in group:
            cfg = r["config"]
            weights = os.path.join(a.sweep_dir, r["dir"], f"model_step{r['steps']:06d}.safetensors")
            if not os.path.exists(weights):
                continue
            for w in windows:
                out = subprocess.run(
                    [a.bin, "eval", "--weights", weights, "--val", a.val, "--window", str(w),
                     "--seq-len", str(cfg["seq-len"]), "--batch", str(cfg["batch"]),
                     "--val-tokens", str(cfg["val-tokens"]), "--threads", a.threads],
                    capture_output=True, text=True)
                m = re.search(r"val_loss:([0-9.]+)", out.stdout + out.stderr)
                if out.returncode != 0 or not m:
                    sys.exit(f"{weights}: speedrun eval failed:\n{out.stdout}{out.stderr}")
                losses[w].append(float(m.group(1)))
        if losses[windows[0]]:
            print(f"| {name} | " + " | ".join(stats(losses[w]) for w in windows) + " |", flush=True)


if __name__ == "__main__":
    main()
