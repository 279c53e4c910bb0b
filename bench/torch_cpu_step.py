"""Tokens/s of one training step (forward + backward + all optimizer steps) of the
reference PyTorch model (tools/reference) on the CPU, eager mode, fp32.

  /usr/bin/python3 bench/torch_cpu_step.py --layers 4 --heads 4 --head-dim 64 \
      --vocab 50304 --seq-len 1024 --batch 1 --window 512 --threads 2 --steps 5

Tokens come from --data (a shard glob, read by the reference loader) or are random
with an EOT opening a document every --doc-len tokens on average (geometric lengths).
After --warmup steps (so the zero-initialised projections are no longer zero), --steps
steps are timed one by one; prints one JSON line with the median.
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools", "reference"))

import torch  # noqa: E402

import data as rdata  # noqa: E402
import model as rmodel  # noqa: E402
import optim as roptim  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--eot", type=int, default=50256)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--data", default=None, help="shard glob (default: random tokens)")
    p.add_argument("--doc-len", type=float, default=1000.0, help="mean document length (random)")
    p.add_argument("--attention", choices=["block", "dense"], default="block",
                   help="block: O(T*window) like FlexAttention; dense: full [T, T]")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def random_batches(n, B, T, vocab, eot, doc_len, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        toks = torch.randint(0, vocab - 1, (B, T + 1), generator=g)
        toks += (toks >= eot).long()  # every id but the EOT
        starts = torch.rand(B, T + 1, generator=g) < 1.0 / doc_len
        starts[:, 0] = True
        toks[starts] = eot
        out.append((toks[:, :-1].contiguous(), toks[:, 1:].contiguous()))
    return out


def main(argv=None):
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = rmodel.GPTConfig(layers=a.layers, heads=a.heads, head_dim=a.head_dim, vocab=a.vocab,
                           eot=a.eot).validate()
    m = rmodel.init_weights_(rmodel.GPT(cfg, attention=a.attention), a.seed)
    opts = roptim.build_optimizers(m, momentum=0.95, ns_dtype=torch.float32)
    n = a.warmup + a.steps
    if a.data:
        ld = rdata.DataLoader(a.data, a.batch, a.seq_len)
        batches = [ld.next_batch() for _ in range(n)]
    else:
        batches = random_batches(n, a.batch, a.seq_len, a.vocab, a.eot, a.doc_len, a.seed)
    ms = []
    loss = float("nan")
    for i, (x, y) in enumerate(batches):
        t0 = time.perf_counter()
        loss_t = m(x, y, a.window)
        loss_t.backward()
        for opt in opts:
            opt.step()
        m.zero_grad(set_to_none=True)
        dt = 1000 * (time.perf_counter() - t0)
        loss = float(loss_t.detach())
        if i >= a.warmup:
            ms.append(dt)
    med = statistics.median(ms)
    tokens = a.batch * a.seq_len
    print(json.dumps({
        "tokens_per_s": tokens / (med / 1000.0), "ms_per_step": med,
        "ms_min": min(ms), "ms_max": max(ms), "steps": len(ms), "tokens_per_step": tokens,
        "threads": torch.get_num_threads(), "attention": a.attention, "window": a.window,
        "layers": a.layers, "heads": a.heads, "head_dim": a.head_dim, "vocab": a.vocab,
        "seq_len": a.seq_len, "batch": a.batch, "data": a.data or "random",
        "last_loss": loss, "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
