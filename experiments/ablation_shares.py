#!/usr/bin/env python3
"""Shares of the previous -> recipe gain per change, from an ablation sweep's summary.json.

    python3 experiments/ablation_shares.py runs/ablation_tiny/summary.json

The sweep (experiments/ablation_tiny.json) names its variants `recipe`, `previous`,
`plus-<change>` (the previous record's settings with that one change of the recipe) and
`minus-<change>` (the recipe without it). Every variant is trained from the same seeds, and
a seed fixes the initial weights (the data order is the same for every run), so the
differences are taken seed by seed (paired) before averaging:

    total gain      previous - recipe
    gain alone      previous - plus-<change>     (the change on top of the previous record)
    gain last       minus-<change> - recipe      (the change removed from the recipe)

for the final validation loss (lower is better) and for the steps to the sweep's target
loss (fewer is better). A share is mean gain / mean total gain; its ± is the standard error
of the gain's mean (std / sqrt(n)) over the mean total gain, so it leaves out the total's
own noise. Shares need not add up to 100%: the changes interact.
Standard library only.
"""
import json
import math
import sys

CHANGES = ["window-warmup", "optimizer", "momentum-warmup", "cooldown"]


def stats(xs):
    xs = [x for x in xs if x is not None]
    n = len(xs)
    if n == 0:
        return None, None, 0
    m = sum(xs) / n
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    return m, s, n


def per_seed(variant, key):
    return {r["seed"]: r.get(key) for r in variant["runs"] if r["finished"]}


def paired(a, b):
    """a[seed] - b[seed] over the seeds both have."""
    return [a[s] - b[s] for s in sorted(a) if s in b and a[s] is not None and b[s] is not None]


def fmt(m, s, digits):
    if m is None:
        return "-"
    return f"{m:+.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "")


def share(gain, total):
    m, s, n = stats(gain)
    if m is None or not total:
        return "-"
    se = s / math.sqrt(n) if s is not None else None
    return f"{100 * m / total:.0f}%" + (f" ± {100 * se / abs(total):.0f}" if se is not None else "")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    summary = json.load(open(sys.argv[1]))
    v = {x["name"]: x for x in summary["variants"]}
    for need in ("recipe", "previous"):
        if need not in v:
            sys.exit(f"{sys.argv[1]}: no variant '{need}'")
    target = summary.get("target_loss")
    metrics = [("final_val_loss", "final val loss", 4, 1)]
    if target is not None:
        metrics.append(("steps_to_target", f"steps to {target:g}", 1, 1))
    for key, label, digits, sign in metrics:
        prev, rec = per_seed(v["previous"], key), per_seed(v["recipe"], key)
        total = paired(prev, rec)
        tm, ts, tn = stats(total)
        print(f"### {label}: gain of each change (paired by seed, mean ± std over seeds)\n")
        print(f"total, previous - recipe: {fmt(tm, ts, digits)} (n={tn})\n")
        print("| change | gain alone (previous - plus) | share | gain last (minus - recipe) | share |")
        print("| --- | ---: | ---: | ---: | ---: |")
        sums = [0.0, 0.0]
        for c in CHANGES:
            row = [c]
            for k, (hi, lo) in enumerate([("previous", f"plus-{c}"), (f"minus-{c}", "recipe")]):
                if hi not in v or lo not in v:
                    row += ["-", "-"]
                    continue
                g = paired(per_seed(v[hi], key), per_seed(v[lo], key))
                m, s, _ = stats(g)
                sums[k] += m if m is not None else 0.0
                row += [fmt(m, s, digits), share(g, tm)]
            print("| " + " | ".join(row) + " |")
        if tm:
            print(f"| sum | {sums[0]:+.{digits}f} | {100 * sums[0] / tm:.0f}% | "
                  f"{sums[1]:+.{digits}f} | {100 * sums[1] / tm:.0f}% |")
        print()


if __name__ == "__main__":
    main()
