"""Trains the reference GPT with SPEC.md's loop; flags and defaults as `speedrun train`
(the defaults are the `record` preset).

  /usr/bin/python3 tools/reference/train.py --train 'data/train_*.bin' --val 'data/val_*.bin' \
      --init init.safetensors --layers 2 --heads 2 --head-dim 16 --vocab 512 --seq-len 256 \
      --steps 20 --out runs/ref

Loop, for s = 0..N: w = window(s); if s == N or (val_every > 0 and s % val_every == 0):
validation (loader reset, mean of the batch losses over val_tokens); stop at s == N;
otherwise forward/backward on the next training batch, every group's lr = base * mult(s),
Muon momentum(s), all optimizers step. OUT/metrics.jsonl gets one line per training step
{"step", "train_loss", "lr", "window", "momentum", "ms"} and one per validation
{"step", "val_loss"}; stdout gets the record's log lines.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data as rdata  # noqa: E402
import model as rmodel  # noqa: E402
import optim as roptim  # noqa: E402

RECORD = dict(layers=12, heads=6, head_dim=128, vocab=50304, eot=50256)
SHAPE_KEYS = ("layers", "heads", "head_dim", "vocab", "eot")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Reference PyTorch trainer of SPEC.md")
    p.add_argument("--train", required=True, help="glob of training shards")
    p.add_argument("--val", default=None, help="glob of validation shards (none: no validation)")
    p.add_argument("--init", default=None, help="initial weights (safetensors, SPEC names)")
    p.add_argument("--seed", type=int, default=None, help="SPEC init with this seed (default 0)")
    for k in SHAPE_KEYS:
        p.add_argument("--" + k.replace("_", "-"), type=int, default=None,
                       help=f"model shape (default: from --init metadata, else {RECORD[k]})")
    p.add_argument("--seq-len", type=int, default=65536)
    p.add_argument("--batch", type=int, default=1, help="sequences per step")
    p.add_argument("--steps", type=int, default=1750)
    p.add_argument("--cooldown", type=int, default=640)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--window-start", type=int, default=64)
    p.add_argument("--window-end", type=int, default=1792)
    p.add_argument("--window-schedule", choices=["linear", "fixed"], default="linear")
    p.add_argument("--muon-lr", type=float, default=0.05)
    p.add_argument("--adam-beta1", type=float, default=0.8)
    p.add_argument("--adam-beta2", type=float, default=0.95)
    p.add_argument("--lr-embed", type=float, default=0.6)
    p.add_argument("--lr-head", type=float, default=0.008)
    p.add_argument("--lr-scalar", type=float, default=0.04)
    p.add_argument("--momentum-warmup", type=int, default=300)
    p.add_argument("--momentum-start", type=float, default=0.85)
    p.add_argument("--momentum-end", type=float, default=0.95)
    p.add_argument("--val-every", type=int, default=125)
    p.add_argument("--val-tokens", type=int, default=10485760)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--out", default="runs/reference")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--attention", choices=["auto", "dense", "block", "flex"], default="auto",
                   help="auto: flex on cuda, dense on cpu")
    p.add_argument("--tile", type=int, default=128, help="query tile of --attention block")
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 (the record's layout) on cuda, fp32 on cpu")
    p.add_argument("--ns-dtype", choices=["auto", "fp32", "bf16"], default="auto",
                   help="Muon Newton-Schulz dtype; auto: bf16 on cuda, fp32 on cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (torch >= 2)")
    p.add_argument("--save-final", action="store_true",
                   help="write OUT/final.safetensors (fp32, SPEC names, shape metadata)")
    a = p.parse_args(argv)
    cuda = a.device == "cuda"
    if a.attention == "auto":
        a.attention = "flex" if cuda else "dense"
    if a.dtype == "auto":
        a.dtype = "bf16" if cuda else "fp32"
    if a.ns_dtype == "auto":
        a.ns_dtype = "bf16" if cuda else "fp32"
    return a


def resolve_config(args):
    """Model shape: --init metadata when present (explicit flags must agree), else flags,
    else the record's values. Returns (GPTConfig, initial tensors or None)."""
    given = {k: getattr(args, k) for k in SHAPE_KEYS if getattr(args, k) is not None}
    tensors, meta = None, {}
    if args.init:
        tensors, meta = rdata.load_safetensors(args.init)
    shape = dict(RECORD)
    from_meta = {k: int(meta[k]) for k in SHAPE_KEYS if k in meta}
    for k, v in given.items():
        if k in from_meta and from_meta[k] != v:
            raise SystemExit(f"--{k.replace('_', '-')} {v} disagrees with {args.init} "
                             f"metadata {k}={from_meta[k]}")
    shape.update(given)
    shape.update(from_meta)
    return rmodel.GPTConfig(**shape).validate(), tensors


def check_args(args):
    for k in ("seq_len", "batch", "steps"):
        if getattr(args, k) < 1:
            raise SystemExit(f"--{k.replace('_', '-')} must be >= 1")
    if args.cooldown < 0 or args.warmup < 0 or args.cooldown > args.steps:
        raise SystemExit("--cooldown and --warmup must be >= 0 and cooldown <= steps")
    w0 = roptim.attention_window(0, args.steps, args.window_start, args.window_end,
                                 args.window_schedule)
    if w0 < 1:
        raise SystemExit(f"window at step 0 is {w0}: with --window-schedule linear, "
                         "--window-start must be >= 64 (or use --window-schedule fixed)")
    if args.val:
        bt = args.batch * args.seq_len
        if args.val_tokens < bt or args.val_tokens % bt:
            raise SystemExit(f"--val-tokens {args.val_tokens} must be a positive multiple of "
                             f"batch*seq-len = {bt}")
    if args.compile and not hasattr(torch, "compile"):
        raise SystemExit(f"--compile needs torch >= 2 (this is {torch.__version__})")
    if args.attention == "flex" and args.device != "cuda":
        raise SystemExit("--attention flex needs --device cuda")


class Runner:
    """Model, optimizers and the per-step forward (with the flex block mask if used)."""

    def __init__(self, args, cfg, tensors):
        self.args, self.cfg = args, cfg
        self.device = torch.device(args.device)
        model = rmodel.GPT(cfg, attention=args.attention, tile=args.tile)
        if tensors is not None:
            rmodel.load_weights_(model, tensors, args.init)
        else:
            rmodel.init_weights_(model, 0 if args.seed is None else args.seed)
        model.to(self.device)
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        rmodel.set_precision_(model, dtype)
        model.prepare_rotary(args.seq_len, torch.bfloat16 if args.dtype == "bf16" else
                             torch.float32, self.device)
        self.model = model
        self.fwd = torch.compile(model) if args.compile else model
        ns_dtype = torch.bfloat16 if args.ns_dtype == "bf16" else torch.float32
        cuda = self.device.type == "cuda"
        self.opts = roptim.build_optimizers(
            model, args.lr_embed, args.lr_head, args.lr_scalar, args.muon_lr,
            (args.adam_beta1, args.adam_beta2), 1e-8, args.momentum_start, ns_dtype,
            fused=cuda, compile_ns=cuda and args.compile)
        self.masks = None
        if args.attention == "flex":
            self.masks = rmodel.FlexMaskBuilder(args.batch, args.seq_len, cfg.eot, self.device)

    def loss(self, x, y, window):
        x, y = x.to(self.device), y.to(self.device)
        if self.masks is None:
            return self.fwd(x, y, window)
        # flex: the window lives in the block mask; passing it as a Python int as well
        # would make torch.compile specialise (recompile) on every new window
        return self.fwd(x, y, None, self.masks(x, window))

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def run(args):
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, tensors = resolve_config(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(dict(vars(args), model=vars(cfg)), f, indent=1)
    log = open(os.path.join(args.out, "log.txt"), "w")
    metrics = open(os.path.join(args.out, "metrics.jsonl"), "w")

    def print0(s):
        print(s, flush=True)
        log.write(s + "\n")
        log.flush()

    def emit(d):
        metrics.write(json.dumps(d) + "\n")
        metrics.flush()

    N = args.steps
    B, T = args.batch, args.seq_len
    r = Runner(args, cfg, tensors)
    train_loader = rdata.DataLoader(args.train, B, T)
    val_loader = rdata.DataLoader(args.val, B, T) if args.val else None
    val_steps = args.val_tokens // (B * T) if args.val else 0
    print0(f"reference: torch {torch.__version__}, device {args.device}, attention "
           f"{args.attention}, dtype {args.dtype}, ns {args.ns_dtype}, threads "
           f"{torch.get_num_threads()}, compile {args.compile}")
    print0(f"model: {cfg}; {sum(p.numel() for p in r.model.parameters())} parameters")
    print0(f"Training DataLoader: total number of tokens: {train_loader.ntok_total} across "
           f"{len(train_loader.files)} files")
    if val_loader:
        print0(f"Validation DataLoader: total number of tokens: {val_loader.ntok_total} across "
               f"{len(val_loader.files)} files")

    training_time_ms = 0.0
    r.sync()
    t0 = time.time()
    for step in range(N + 1):
        last = step == N
        window = roptim.attention_window(step, N, args.window_start, args.window_end,
                                         args.window_schedule)
        if step == 10:
            training_time_ms, t0 = 0.0, time.time()
        timed_steps = float("nan") if step <= 11 else (step - 10) + 1
        if val_loader and (last or (args.val_every > 0 and step % args.val_every == 0)):
            r.sync()
            training_time_ms += 1000 * (time.time() - t0)
            r.model.eval()
            val_loader.reset()
            total = 0.0
            with torch.no_grad():
                for _ in range(val_steps):
                    xv, yv = val_loader.next_batch()
                    total += float(r.loss(xv, yv, window))
            val_loss = total / val_steps
            emit({"step": step, "val_loss": val_loss})
            print0(f"step:{step}/{N} val_loss:{val_loss:.4f} train_time:{training_time_ms:.0f}ms "
                   f"step_avg:{training_time_ms / (timed_steps - 1):.2f}ms")
            r.sync()
            t0 = time.time()
        if last:
            break
        r.model.train()
        ts = time.time()
        x, y = train_loader.next_batch()
        loss = r.loss(x, y, window)
        loss.backward()
        mult = roptim.lr_multiplier(step, N, args.cooldown, args.warmup)
        mom = roptim.muon_momentum(step, args.momentum_warmup, args.momentum_start,
                                   args.momentum_end)
        roptim.set_step_hparams(r.opts, mult, mom)
        for opt in r.opts:
            opt.step()
        r.model.zero_grad(set_to_none=True)
        train_loss = float(loss.detach())
        r.sync()
        ms = 1000 * (time.time() - ts)
        emit({"step": step, "train_loss": train_loss, "lr": mult, "window": window,
              "momentum": mom, "ms": ms})
        approx = training_time_ms + 1000 * (time.time() - t0)
        print0(f"step:{step + 1}/{N} train_loss:{train_loss:.4f} train_time:{approx:.0f}ms "
               f"step_avg:{approx / timed_steps:.2f}ms")
    if args.device == "cuda":
        print0(f"peak memory consumption: {torch.cuda.max_memory_allocated() // 1024 // 1024} MiB")
    if args.save_final:
        rdata.save_safetensors(os.path.join(args.out, "final.safetensors"),
                               rmodel.state_dict_fp32(r.model), cfg.to_metadata())
    metrics.close()
    log.close()
    return r


def main(argv=None):
    run(parse_args(argv))


if __name__ == "__main__":
    main()
