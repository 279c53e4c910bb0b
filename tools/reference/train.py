"""Trains the reference GPT with SPEC.md's loop; flags, presets and outputs as
`speedrun train` (here the default preset is `record`; pass --preset to both to compare).

  /usr/bin/python3 tools/reference/train.py --train 'data/train_*.bin' --val 'data/val_*.bin' \
      --init runs/cpp/model_step000000.safetensors --seq-len 256 --batch 2 --steps 20 \
      --cooldown 8 --val-every 10 --val-tokens 512 --out runs/ref

Loop, for s = 0..N: w = window(s); if s == N or (val_every > 0 and s % val_every == 0):
validation (loader reset, mean of the batch losses over val_tokens); stop at s == N;
otherwise forward/backward on the next training batch, every group's lr = base * mult(s),
Muon momentum(s), all optimizers step. OUT/metrics.jsonl gets one line per training step
{"step", "train_loss", "lr", "window", "momentum", "ms"} and one per validation
{"step", "val_loss", "window"}; OUT/model_stepNNNNNN.safetensors at step 0, every
--save-every steps and at N (fp32, SPEC names, shape metadata); stdout and OUT/log.txt get
the record's log lines.
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

DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16}
SHAPE_KEYS = ("layers", "heads", "head_dim", "vocab", "eot")
# The presets of `speedrun train --preset` (SPEC.md's record; the paper's "before" column;
# a small CPU config). Flags left out take the preset's value.
_RECORD = dict(layers=12, heads=6, head_dim=128, vocab=50304, eot=50256, seq_len=65536,
               batch=8, steps=1750, cooldown=640, warmup=0, window_start=64, window_end=1792,
               window_schedule="linear", muon_lr=0.05, adam_beta1=0.8, adam_beta2=0.95,
               lr_embed=0.6, lr_head=0.008, lr_scalar=0.04, momentum_warmup=300,
               momentum_start=0.85, momentum_end=0.95, val_every=125, val_tokens=10485760)
PRESETS = {
    "record": _RECORD,
    "previous-record": dict(_RECORD, steps=1875, cooldown=562, window_schedule="fixed",
                            window_start=1024, window_end=1024, adam_beta1=0.9, muon_lr=0.04,
                            momentum_warmup=500),
    "tiny": dict(_RECORD, layers=4, heads=4, head_dim=32, vocab=512, eot=0, seq_len=1024,
                 batch=4, steps=300, cooldown=110, window_start=64, window_end=512,
                 momentum_warmup=50, val_every=50, val_tokens=4 * 1024 * 8),
}
_TYPES = {k: type(v) for k, v in _RECORD.items()}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Reference PyTorch trainer of SPEC.md")
    p.add_argument("--preset", choices=sorted(PRESETS), default="record",
                   help="defaults of every flag below (default: record)")
    p.add_argument("--train", required=True, help="glob of training shards")
    p.add_argument("--val", default=None, help="glob of validation shards (none: no validation)")
    p.add_argument("--init", default=None, help="initial weights (safetensors, SPEC names); "
                   "its metadata layers/heads/head_dim/vocab/eot set the model shape")
    p.add_argument("--seed", type=int, default=0, help="SPEC init with this seed (without --init)")
    for k, v in _RECORD.items():
        kw = dict(choices=["linear", "fixed"]) if k == "window_schedule" else {}
        p.add_argument("--" + k.replace("_", "-"), type=_TYPES[k], default=None,
                       help=f"(preset record: {v})", **kw)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--out", default="runs/reference")
    p.add_argument("--save-every", type=int, default=0,
                   help="also write OUT/model_stepNNNNNN.safetensors every this many steps "
                        "(always at step 0 and N)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--attention", choices=["auto", "dense", "block", "flex"], default="auto",
                   help="auto: flex on cuda, dense on cpu")
    p.add_argument("--tile", type=int, default=128, help="query tile of --attention block")
    p.add_argument("--dtype", choices=["auto", "fp32", "fp64", "bf16"], default="auto",
                   help="auto: bf16 (the record's layout) on cuda, fp32 on cpu; fp64 for "
                        "parity runs that must stay together for many steps")
    p.add_argument("--ns-dtype", choices=["auto", "fp32", "fp64", "bf16"], default="auto",
                   help="Muon Newton-Schulz dtype; auto: bf16 on cuda, else the model's dtype")
    p.add_argument("--ns-bf16", action="store_true", help="same as --ns-dtype bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (torch >= 2)")
    a = p.parse_args(argv)
    a.given_shape = {k: getattr(a, k) for k in SHAPE_KEYS if getattr(a, k) is not None}
    for k, v in PRESETS[a.preset].items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    cuda = a.device == "cuda"
    if a.attention == "auto":
        a.attention = "flex" if cuda else "dense"
    if a.dtype == "auto":
        a.dtype = "bf16" if cuda else "fp32"
    if a.ns_bf16:
        a.ns_dtype = "bf16"
    if a.ns_dtype == "auto":
        a.ns_dtype = "bf16" if cuda else a.dtype
    return a


def resolve_config(args):
    """Model shape: --init metadata when present (explicit flags must agree), else the
    flags / preset. Returns (GPTConfig, initial tensors or None)."""
    tensors, meta = None, {}
    if args.init:
        tensors, meta = rdata.load_safetensors(args.init)
    shape = {k: getattr(args, k) for k in SHAPE_KEYS}
    from_meta = {k: int(meta[k]) for k in SHAPE_KEYS if k in meta}
    for k, v in args.given_shape.items():
        if k in from_meta and from_meta[k] != v:
            raise SystemExit(f"--{k.replace('_', '-')} {v} disagrees with {args.init} "
                             f"metadata {k}={from_meta[k]}")
    shape.update(from_meta)
    for k in SHAPE_KEYS:  # what the run actually uses
        setattr(args, k, shape[k])
    return rmodel.GPTConfig(**shape).validate(), tensors


def check_args(args):
    for k in ("seq_len", "batch", "steps"):
        if getattr(args, k) < 1:
            raise SystemExit(f"--{k.replace('_', '-')} must be >= 1")
    if args.cooldown < 0 or args.warmup < 0 or args.warmup + args.cooldown > args.steps:
        raise SystemExit("--warmup and --cooldown must be >= 0 with warmup + cooldown <= steps")
    w0 = roptim.attention_window(0, args.steps, args.window_start, args.window_end,
                                 args.window_schedule)
    if w0 < 1:
        raise SystemExit(f"window at step 0 is {w0}: with --window-schedule linear, "
                         "--window-start must be >= 64 (or use --window-schedule fixed)")
    bt = args.batch * args.seq_len
    if args.val_tokens < 0 or args.val_tokens % bt:
        raise SystemExit(f"--val-tokens {args.val_tokens} must be a multiple of batch*seq-len "
                         f"= {bt} (0: no validation)")
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
        dtype = DTYPES[args.dtype]
        rmodel.set_precision_(model, dtype)
        model.prepare_rotary(args.seq_len, dtype, self.device)
        self.model = model
        self.fwd = torch.compile(model) if args.compile else model
        ns_dtype = DTYPES[args.ns_dtype]
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
    use_val = bool(args.val) and args.val_tokens > 0
    val_loader = rdata.DataLoader(args.val, B, T) if use_val else None
    val_steps = args.val_tokens // (B * T) if use_val else 0

    def save(step):
        meta = dict(cfg.to_metadata(), step=str(step), preset=args.preset)
        rdata.save_safetensors(os.path.join(args.out, f"model_step{step:06d}.safetensors"),
                               rmodel.state_dict_fp32(r.model), meta)
    print0(f"reference: torch {torch.__version__}, device {args.device}, attention "
           f"{args.attention}, dtype {args.dtype}, ns {args.ns_dtype}, threads "
           f"{torch.get_num_threads()}, compile {args.compile}")
    print0(f"model: {cfg}; {sum(p.numel() for p in r.model.parameters())} parameters")
    print0(f"Training DataLoader: total number of tokens: {train_loader.ntok_total} across "
           f"{len(train_loader.files)} files")
    if val_loader:
        print0(f"Validation DataLoader: total number of tokens: {val_loader.ntok_total} across "
               f"{len(val_loader.files)} files")

    save(0)
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
            emit({"step": step, "val_loss": val_loss, "window": window})
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
        if args.save_every > 0 and (step + 1) % args.save_every == 0 and step + 1 < N:
            save(step + 1)
    if args.device == "cuda":
        print0(f"peak memory consumption: {torch.cuda.max_memory_allocated() // 1024 // 1024} MiB")
    save(N)
    metrics.close()
    log.close()
    return r


def main(argv=None):
    run(parse_args(argv))


if __name__ == "__main__":
    main()
