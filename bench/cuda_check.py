"""Helpers of bench/cuda_check.sh (standard library only):

  python3 bench/cuda_check.py compare GPU.jsonl CPU.jsonl --json OUT.json [--label-a cuda]
      the two runs' loss curves (speedrun's metrics.jsonl) against the bf16-noise criterion
  python3 bench/cuda_check.py bench BENCH.json
      the step benchmark (`speedrun bench --json` or bench_cuda_step --json) beside the
      PyTorch anchor of docs/PERFORMANCE.md
  python3 bench/cuda_check.py head BENCH.json OTHER.json
      the first window's forward+backward in two `speedrun bench --json` runs that differ in
      the head's chunk size (--head-logits), side by side
  python3 bench/cuda_check.py gemm BENCH.json TUNED.json
      the first window's step in two `speedrun bench --json` runs, the second with
      SPEEDRUN_GEMM_TUNE (cuBLASLt's candidate algorithms timed), side by side
  python3 bench/cuda_check.py results STEPS.tsv --json OUT.json [--part NAME=FILE ...]
      one JSON of every step's result and the parts' JSON files
  python3 bench/cuda_check.py selftest
      the bench table's verdicts against made-up runs on either side of each target (a ctest)

The criterion for the curves (bf16 compute on the GPU against fp32 on the CPU, same
initial weights and batches): both runs finite and of the same length; the first step's
losses within 0.02 (one forward pass from identical weights: only rounding differs); the
mean of the last 10 steps within 0.05 and every step within 0.15 (the trajectories drift
apart by rounding, as two bf16 runs with different reduction orders do, but a wrong
gradient or update shows as a curve that falls more slowly: typically > 0.1 by step 100);
the final validation losses, when both runs have one, within 0.05; and the loss falling by
at least 1.0 over the run (the model learns).
"""
import argparse
import json
import math
import sys

FIRST_MAX = 0.02
LAST10_MAX = 0.05
STEP_MAX = 0.15
VAL_MAX = 0.05
MIN_DROP = 1.0

# docs/PERFORMANCE.md, "GPU anchor: the PyTorch record on one H200" (2026-11-28).
# MFU: the step's model FLOPs (6N + exact attention pairs, as `speedrun bench` counts them)
# against the same GPU's measured bf16 GEMM rate, so it compares across GPU models.
ANCHOR_GPU = "H200"
ANCHOR = {
    64: {"fwd_bwd_ms": 113.3, "optimizer_ms": 50.6, "step_ms": 163.5, "mfu": 0.380},
    1792: {"fwd_bwd_ms": 131.4, "optimizer_ms": 49.7, "step_ms": 175.6, "mfu": 0.393},
}
ANCHOR_PEAK_GIB = 30.5
ANCHOR_FIRST_STEP_S = 258.0
# The GPU backend's targets (docs/PERFORMANCE.md, "Targets"), each a number the bench
# measures: the full step at 0.6x the anchor's, Adam + Muon on all 72 matrices within 6 ms,
# the attention's forward + backward over the 12 layers within 20 ms at window 1792
# (FlexAttention: ~24), MFU against the measured GEMM rate >= 55%, the first step within 5 s
# of launch, and no more memory than the anchor.
STEP_TARGET = 0.6
OPTIMIZER_TARGET_MS = 6.0
ATTENTION_TARGET_MS = {1792: 20.0}
MFU_TARGET = 0.55
FIRST_STEP_TARGET_S = 5.0


def read_metrics(path):
    train, val = {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            m = json.loads(line)
            if "train_loss" in m:
                train[int(m["step"])] = float(m["train_loss"])
            elif "val_loss" in m:
                val[int(m["step"])] = float(m["val_loss"])
    return [train[k] for k in sorted(train)], val


def compare(args):
    a, va = read_metrics(args.a)
    b, vb = read_metrics(args.b)
    res = {"a": args.label_a, "b": args.label_b, "steps_a": len(a), "steps_b": len(b),
           "criterion": {"first_max": FIRST_MAX, "last10_max": LAST10_MAX,
                         "step_max": STEP_MAX, "val_max": VAL_MAX, "min_drop": MIN_DROP},
           "curve_a": a, "curve_b": b, "val_a": va, "val_b": vb, "failures": []}
    fails = res["failures"]
    n = min(len(a), len(b))
    if n == 0:
        fails.append("no train_loss in one of the runs")
    if len(a) != len(b):
        fails.append(f"different lengths: {len(a)} vs {len(b)} steps")
    if any(not math.isfinite(x) for x in a + b):
        fails.append("a loss is not finite")
    if n:
        d = [abs(a[i] - b[i]) for i in range(n)]
        k = min(10, n)
        res["first_delta"] = d[0]
        res["max_delta"] = max(d)
        res["max_delta_step"] = d.index(max(d))
        res["last10_delta"] = abs(sum(a[n - k:n]) / k - sum(b[n - k:n]) / k)
        res["final_a"], res["final_b"] = a[n - 1], b[n - 1]
        res["drop_a"] = a[0] - sum(a[n - k:n]) / k
        res["drop_b"] = b[0] - sum(b[n - k:n]) / k
        if d[0] > FIRST_MAX:
            fails.append(f"first step differs by {d[0]:.4f} > {FIRST_MAX}")
        if res["last10_delta"] > LAST10_MAX:
            fails.append(f"last-10 mean differs by {res['last10_delta']:.4f} > {LAST10_MAX}")
        if res["max_delta"] > STEP_MAX:
            fails.append(f"step {res['max_delta_step']} differs by {res['max_delta']:.4f} > {STEP_MAX}")
        if n >= 20 and min(res["drop_a"], res["drop_b"]) < MIN_DROP:
            fails.append(f"loss fell by only {min(res['drop_a'], res['drop_b']):.3f} < {MIN_DROP}")
    common = sorted(set(va) & set(vb))
    if common:
        s = common[-1]
        res["val_step"], res["val_delta"] = s, abs(va[s] - vb[s])
        if res["val_delta"] > VAL_MAX:
            fails.append(f"val loss at step {s} differs by {res['val_delta']:.4f} > {VAL_MAX}")
    res["pass"] = not fails
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if n:
        print(f"{args.label_a} vs {args.label_b}: {n} steps; first |d| {res['first_delta']:.4f}, "
              f"max |d| {res['max_delta']:.4f} (step {res['max_delta_step']}), last-10 mean |d| "
              f"{res['last10_delta']:.4f}; final {res['final_a']:.4f} vs {res['final_b']:.4f}"
              + (f"; val |d| {res['val_delta']:.4f} at step {res['val_step']}" if common else ""))
        for i in sorted(set([0, 1, 2, 5, 10, 20, 50, n - 1]) & set(range(n))):
            print(f"  step {i:4d}: {a[i]:.4f} {b[i]:.4f}  |d| {abs(a[i] - b[i]):.4f}")
    print("PASS" if res["pass"] else "FAIL: " + "; ".join(fails))
    print(f"criterion: first |d| <= {FIRST_MAX}, last-10 mean |d| <= {LAST10_MAX}, every step "
          f"|d| <= {STEP_MAX}, final val |d| <= {VAL_MAX}, loss falls >= {MIN_DROP}")
    return 0 if res["pass"] else 1


def fmt(v, spec=".1f"):
    return "n/a" if v is None or v == 0 else format(v, spec)


def verdict(ours, limit, at_most=True):
    """'yes' / 'no' for a measured value against a target, '' where either is missing."""
    if not ours or limit is None:
        return ""
    return "yes" if (ours <= limit if at_most else ours >= limit) else "no"


def bench(args):
    with open(args.json) as f:
        j = json.load(f)
    cfg = j.get("config", {})
    print(f"step benchmark ({j.get('tool', 'speedrun bench')}): {j.get('backend')} "
          f"{j.get('precision')}, {cfg.get('layers')}x{cfg.get('heads')}x{cfg.get('head_dim')}, "
          f"vocab {cfg.get('vocab')}, {cfg.get('batch', 1)} x {cfg.get('seq_len')} tokens")
    # The GPU this ran on ("cuda, NVIDIA H100 80GB HBM3, sm_90"); older JSON lacks it.
    host = j.get("host") or ""
    on_gpu = j.get("backend") == "cuda"
    same_gpu = ANCHOR_GPU in host
    where = ANCHOR_GPU if same_gpu or not host or not on_gpu else f"{ANCHOR_GPU}, another GPU"
    if host:
        print(f"{'GPU' if on_gpu else 'device'}: {host}")
    build = j.get("speedrun") or {}  # the build that ran it; older JSON lacks it
    if build:
        print(f"speedrun {build.get('version')}, commit {build.get('commit')}, {build.get('cuda') or 'no CUDA'}")
    print(f"| quantity | window | speedrun ({j.get('backend')}) | PyTorch anchor ({where}) | ratio "
          f"| target | met |")
    print("|---|---|---|---|---|---|---|")
    met = []  # the verdicts of the rows that have a target

    def row(name, win, ours, ref, ratio, target, ok):
        ok = ok if on_gpu else ""  # a run without a GPU meets or misses nothing
        if ok:
            met.append(ok)
        print(f"| {name} | {win} | {ours} | {ref} | {ratio} | {target} | {ok} |")

    for w in j.get("windows", []):
        win, st = int(w.get("window", 0)), w.get("step", {})
        an = ANCHOR.get(win, {})
        for key, name in (("fwd_bwd_ms", "fwd+bwd (ms)"), ("optimizer_ms", "optimizer (ms)"),
                          ("step_ms", "full step (ms)")):
            ours, ref = st.get(key), an.get(key)
            ratio = f"{ours / ref:.2f}x" if ours and ref else "n/a"
            limit = {"optimizer_ms": OPTIMIZER_TARGET_MS,
                     "step_ms": ref * STEP_TARGET if ref else None}.get(key)
            target = f"<= {limit:.1f}" if limit is not None else ""
            row(name, win, fmt(ours), fmt(ref), ratio, target, verdict(ours, limit))
        # The attention over the micro-batch's layers, each op alone (serialised), as the
        # anchor's FlexAttention figure counts it.
        ms = {(o.get("phase"), o.get("op")): o.get("ms") for o in w.get("ops", [])}
        fwd, bwd = ms.get(("fwd+bwd", "attention_forward")), ms.get(("fwd+bwd", "attention_backward"))
        if fwd and bwd:
            limit = ATTENTION_TARGET_MS.get(win)
            row("attention fwd+bwd, all layers (ms)", win, fmt(fwd + bwd, ".2f"), "", "",
                f"<= {limit:.0f}" if limit else "", verdict(fwd + bwd, limit))
        if st.get("tokens_per_s"):
            row("tokens/s", win, f"{st['tokens_per_s']:,.0f}", "", "", "", "")
        if st.get("mfu"):
            mfu, ref = st["mfu"], an.get("mfu")
            anchor_mfu = f"{100 * ref:.1f}%" if ref else ""
            ratio = f"{mfu / ref:.2f}x" if ref else ""
            row("MFU (measured GEMM rate)", win, f"{100 * mfu:.1f}%", anchor_mfu, ratio,
                f">= {100 * MFU_TARGET:.0f}%", verdict(mfu, MFU_TARGET, at_most=False))
    peak = (j.get("peak_memory") or {}).get("bytes") or 0
    gib = peak / 2**30 if peak else None
    row("peak memory (GiB)", "", fmt(gib, ".2f"), ANCHOR_PEAK_GIB,
        f"{gib / ANCHOR_PEAK_GIB:.2f}x" if gib else "n/a", f"<= {ANCHOR_PEAK_GIB}",
        verdict(gib, ANCHOR_PEAK_GIB))
    first = (j.get("launch") or {}).get("to_first_step_s")
    row("launch to first step (s)", "", fmt(first, ".2f"), f"~{ANCHOR_FIRST_STEP_S:.0f}",
        f"{first / ANCHOR_FIRST_STEP_S:.3f}x" if first else "n/a", f"< {FIRST_STEP_TARGET_S:.0f}",
        verdict(first, FIRST_STEP_TARGET_S))
    ceil = j.get("ceilings") or {}
    if ceil.get("gemm", {}).get("flops_per_s"):
        row(f"ceilings: GEMM {ceil['gemm'].get('n')}^3 / copy", "",
            f"{ceil['gemm']['flops_per_s'] / 1e12:.0f} TFLOP/s / "
            f"{ceil.get('copy', {}).get('bytes_per_s', 0) / 1e9:,.0f} GB/s", "788 / 4,246", "", "", "")
    if not on_gpu:
        print()
        print(f"This ran on the {j.get('backend')} backend ({host}), the path a run without a GPU "
              f"exercises: its times are not comparable with the anchor's, nor with the targets.")
        return 0
    print()
    print(f"targets met: {met.count('yes')} of {len(met)} (the step's time at {STEP_TARGET}x the "
          f"anchor's, the optimizer within {OPTIMIZER_TARGET_MS:.0f} ms, the attention within "
          f"{ATTENTION_TARGET_MS[1792]:.0f} ms at window 1792, MFU, peak memory, first step)")
    if host and not same_gpu:
        print()
        print(f"The anchor ran on an {ANCHOR_GPU}, this on {host}: the time ratios and the "
              f"step's target compare two GPUs. MFU (each against its own GPU's measured GEMM "
              f"rate) is the like-for-like row; `bash bench/gpu_check.sh` on this GPU measures "
              f"its own anchor (~7 min).")
    return 0


def first_window(path):
    """The first window's numbers of a `speedrun bench --json` run that head() and gemm() compare."""
    with open(path) as f:
        j = json.load(f)
    cfg = j.get("config", {})
    w = (j.get("windows") or [{}])[0]
    ms = {(o.get("phase"), o.get("op")): o.get("ms") for o in w.get("ops", [])}
    gemm_ms = [ms.get(("fwd+bwd", op)) for op in ("matmul", "matmul_add")]
    step = w.get("step") or {}
    rows, tokens = cfg.get("head_rows") or 0, (cfg.get("micro_batch") or 1) * (cfg.get("seq_len") or 0)
    return {"rows": rows, "chunks": -(-tokens // rows) if rows else 0, "window": w.get("window"),
            "fwd_bwd_ms": step.get("fwd_bwd_ms"), "optimizer_ms": step.get("optimizer_ms"),
            "step_ms": step.get("step_ms"), "matmul_ms": ms.get(("fwd+bwd", "matmul")),
            "gemm_ms": sum(g for g in gemm_ms if g) if any(gemm_ms) else None,
            "ce_ms": ms.get(("fwd+bwd", "softcap_cross_entropy")),
            "ns_ms": ms.get(("optimizer", "muon_stack")),
            "first_s": (j.get("launch") or {}).get("to_first_step_s")}


def table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


def head(args):
    a, b = first_window(args.json), first_window(args.other)
    table(["head chunk (rows)", "chunks per micro-batch", f"fwd+bwd at window {a['window']} (ms)",
           "matmuls, serialised (ms)", "cross entropy, serialised (ms)"],
          [[r["rows"], r["chunks"], fmt(r["fwd_bwd_ms"], ".2f"), fmt(r["matmul_ms"], ".2f"),
            fmt(r["ce_ms"], ".2f")] for r in (a, b)])
    if a["fwd_bwd_ms"] and b["fwd_bwd_ms"]:
        print(f"head chunks of {a['rows']} rows: fwd+bwd {a['fwd_bwd_ms']:.2f} ms; of {b['rows']} "
              f"rows: {b['fwd_bwd_ms']:.2f} ms ({b['fwd_bwd_ms'] / a['fwd_bwd_ms']:.3f}x)")
    return 0


def gemm(args):
    a, b = first_window(args.json), first_window(args.other)
    table(["GEMM algorithms", f"fwd+bwd at window {a['window']} (ms)", "matmuls, serialised (ms)",
           "Newton-Schulz, serialised (ms)", "optimizer (ms)", "step (ms)", "launch -> first step (s)"],
          [[name] + [fmt(r[k], ".2f") for k in ("fwd_bwd_ms", "gemm_ms", "ns_ms", "optimizer_ms",
                                                "step_ms", "first_s")]
           for name, r in (("the heuristic's first", a), ("fastest of 8, timed", b))])
    if args.record:
        record_summary(args.record)
    if a["step_ms"] and b["step_ms"]:
        print(f"SPEEDRUN_GEMM_TUNE=8: step {b['step_ms']:.2f} ms against {a['step_ms']:.2f} ms "
              f"({b['step_ms'] / a['step_ms']:.3f}x)")
    return 0


def by_window(path):
    """Per window of a `speedrun bench --json` run: the attention ops (serialised), fwd+bwd
    and the step, as attn() compares them."""
    with open(path) as f:
        j = json.load(f)
    out = {}
    for w in j.get("windows") or []:
        ms = {(o.get("phase"), o.get("op")): o.get("ms") for o in w.get("ops", [])}
        step = w.get("step") or {}
        out[w.get("window")] = {"fwd_ms": ms.get(("fwd+bwd", "attention_forward")),
                                "bwd_ms": ms.get(("fwd+bwd", "attention_backward")),
                                "fwd_bwd_ms": step.get("fwd_bwd_ms"), "step_ms": step.get("step_ms")}
    return out


def attn(args):
    """The attention ops of a variant (`args.label`: the wgmma kernels, or the work items in
    tile order) beside the default's, window by window."""
    a, b = by_window(args.json), by_window(args.other)
    windows = [w for w in a if w in b]
    table([args.what, "window", "attention_forward, serialised (ms)",
           "attention_backward, serialised (ms)", "fwd+bwd (ms)", "step (ms)"],
          [[name, w] + [fmt(r[w][k], ".2f") for k in ("fwd_ms", "bwd_ms", "fwd_bwd_ms", "step_ms")]
           for w in windows for name, r in ((args.default, a), (args.label, b))])
    for w in windows:
        x, y = a[w], b[w]
        if all(x[k] and y[k] for k in ("fwd_ms", "bwd_ms", "step_ms")):
            print(f"{args.label} at window {w}: attention_forward {y['fwd_ms']:.2f} ms against "
                  f"{x['fwd_ms']:.2f} ms ({y['fwd_ms'] / x['fwd_ms']:.3f}x), attention_backward "
                  f"{y['bwd_ms']:.2f} ms against {x['bwd_ms']:.2f} ms ({y['bwd_ms'] / x['bwd_ms']:.3f}x), step "
                  f"{y['step_ms']:.2f} ms against {x['step_ms']:.2f} ms ({y['step_ms'] / x['step_ms']:.3f}x)")
    return 0


def record_summary(path):
    """What the GEMM algorithm record says timing changed: per problem the winner's place in
    the heuristic's order and its time per run against the heuristic's first's (one call of
    each problem; a step calls some problems many times)."""
    try:
        with open(path) as f:
            rows = [l.rstrip("\n").split("\t") for l in f if l.startswith("gemm\t")]
    except OSError as e:
        print(f"GEMM algorithm record: {e}")
        return
    rows = [r for r in rows if len(r) == 22]
    changed = [r for r in rows if int(r[20]) > 0]
    print()
    print(f"GEMM algorithm record ({path}): {len(rows)} problems timed, {len(changed)} took "
          f"another algorithm than the heuristic's first")
    if changed:
        table(["M", "N", "K", "op", "batch", "chosen", "ms (chosen)", "ms (first)"],
              [[r[1], r[2], r[3], ("A^T" if r[4] == "T" else "A") + " x " +
                ("B^T" if r[5] == "T" else "B") + " " + r[13], r[6], r[20], r[18], r[21]]
               for r in sorted(changed, key=lambda r: float(r[18]) - float(r[21]))])
    print()


def results(args):
    steps = []
    with open(args.steps) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) >= 4:
                steps.append({"step": p[0], "status": p[1], "seconds": float(p[2] or 0), "note": p[3]})
    out = {"steps": steps}
    for part in args.part or []:
        name, _, path = part.partition("=")
        try:
            with open(path) as f:
                out[name] = json.load(f)
        except (OSError, ValueError) as e:
            out[name] = {"missing": str(e)}
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    return 0


def selftest(args):
    """The bench table's verdicts on made-up runs, each number on one side of its target: a
    GPU run meets what it should and misses what it should; a CPU run meets nothing."""
    import contextlib
    import io
    import os
    import tempfile

    def window(w, step, opt, fwd, bwd, mfu):
        return {"window": w, "step": {"fwd_bwd_ms": step - opt, "optimizer_ms": opt,
                                      "step_ms": step, "mfu": mfu, "tokens_per_s": 1.0},
                "ops": [{"phase": "fwd+bwd", "op": "attention_forward", "ms": fwd},
                        {"phase": "fwd+bwd", "op": "attention_backward", "ms": bwd}]}

    run = {"backend": "cuda", "host": "cuda, NVIDIA H100 80GB HBM3, sm_90", "config": {},
           "speedrun": {"version": "0.1.0", "commit": "0123456789ab", "cuda": "CUDA 13.0.88 for 80,90a"},
           "windows": [window(64, 98.0, 5.9, 2.0, 4.0, 0.54),      # step yes, opt yes, mfu no
                       window(1792, 105.5, 6.1, 8.0, 12.5, 0.56)],  # step no, opt no, attn no, mfu yes
           "peak_memory": {"bytes": 31 * 2**30},                      # no
           "launch": {"to_first_step_s": 4.9}}                        # yes
    expect = {("full step (ms)", "64"): "yes", ("optimizer (ms)", "64"): "yes",
              ("MFU (measured GEMM rate)", "64"): "no", ("full step (ms)", "1792"): "no",
              ("optimizer (ms)", "1792"): "no", ("attention fwd+bwd, all layers (ms)", "1792"): "no",
              ("MFU (measured GEMM rate)", "1792"): "yes", ("peak memory (GiB)", ""): "no",
              ("launch to first step (s)", ""): "yes"}
    fails = []

    def table(j):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(j, f)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                bench(argparse.Namespace(json=f.name))
        finally:
            os.remove(f.name)
        text = out.getvalue()
        cells = {}
        for line in text.splitlines():
            c = [x.strip() for x in line.strip().strip("|").split("|")]
            if len(c) == 7 and c[0] not in ("quantity", "---"):
                cells[(c[0], c[1])] = c[6]
        return text, cells

    text, cells = table(run)
    for key, want in expect.items():
        if cells.get(key) != want:
            fails.append(f"{key}: met {cells.get(key)!r}, expected {want!r}")
    if "targets met: 4 of 9" not in text:
        fails.append("no 'targets met: 4 of 9' line")
    if "commit 0123456789ab" not in text:
        fails.append("the build's commit is not named")
    run["backend"], run["host"] = "cpu", "a CPU"
    text, cells = table(run)
    if any(cells.values()) or "targets met" in text:
        fails.append("a CPU run was given verdicts")
    print("PASS" if not fails else "FAIL: " + "; ".join(fails))
    return 0 if not fails else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--json")
    c.add_argument("--label-a", default="cuda bf16")
    c.add_argument("--label-b", default="cpu fp32")
    b = sub.add_parser("bench")
    b.add_argument("json")
    h = sub.add_parser("head")
    h.add_argument("json")
    h.add_argument("other")
    t = sub.add_parser("attn")
    t.add_argument("json")
    t.add_argument("other")
    t.set_defaults(what="attention kernels", default="mma.sync (default)", label="wgmma")
    o = sub.add_parser("order", help="attn's table for the work items in tile order")
    o.add_argument("json")
    o.add_argument("other")
    o.set_defaults(what="attention work order", default="longest first (default)",
                   label="tile order")
    g = sub.add_parser("gemm")
    g.add_argument("json")
    g.add_argument("other")
    g.add_argument("--record", help="the GEMM algorithm record the timed run wrote")
    r = sub.add_parser("results")
    r.add_argument("steps")
    r.add_argument("--json", required=True)
    r.add_argument("--part", action="append")
    sub.add_parser("selftest", help="the bench table's verdicts on made-up runs")
    a = ap.parse_args()
    return {"compare": compare, "bench": bench, "head": head, "gemm": gemm, "attn": attn,
            "order": attn, "results": results, "selftest": selftest}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
