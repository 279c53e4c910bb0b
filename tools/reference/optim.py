"""Optimizers and schedules of SPEC.md: Adam groups, Muon, LR / window / momentum schedules.

Schedules are pure functions of the step. Optimizers are single-process (world size 1):
gradients are already the full batch's, and Muon orthogonalizes every matrix itself.
"""
import math

import torch

NS_COEFFS = (3.4445, -4.7750, 2.0315)


# ---------------------------------------------------------------------------------------
# schedules

def lr_multiplier(step, num_steps, cooldown, warmup=0):
    """(s+1)/warmup while s < warmup; 1 while s < N - cooldown; then (N - s)/cooldown."""
    if step < 0 or step > num_steps:
        raise ValueError(f"lr_multiplier: step {step} outside [0, {num_steps}]")
    if step < warmup:
        return (step + 1) / warmup
    if step < num_steps - cooldown:
        return 1.0
    return (num_steps - step) / cooldown


def attention_window(step, num_steps, start=64, end=1792, schedule="linear", block=64):
    """linear: block * floor((s/N * (end - start) + start) / block), the record's
    64*((s/N*(1792-64)+64)//64) evaluated in the same double arithmetic; fixed: end."""
    if schedule == "fixed":
        return int(end)
    if schedule != "linear":
        raise ValueError(f"window schedule '{schedule}': expected linear or fixed")
    return block * int(math.floor((step / num_steps * (end - start) + start) / block))


def muon_momentum(step, warmup_steps=300, start=0.85, end=0.95):
    """frac = min(s / warmup, 1); m = (1 - frac) * start + frac * end (the record's form)."""
    frac = min(step / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
    return (1 - frac) * start + frac * end


# ---------------------------------------------------------------------------------------
# Muon

def zeropower_via_newtonschulz5(G, steps=5, eps=1e-7, dtype=torch.bfloat16):
    """The record's quintic Newton-Schulz in `dtype` (bf16 in the record): X = G/(|G|_F+eps),
    transposed when rows > cols; `steps` times A = X X^T, B = b A + c A A, X = a X + B X;
    transposed back."""
    assert G.dim() == 2
    a, b, c = NS_COEFFS
    X = G.to(dtype)
    X = X / (X.norm() + eps)
    if G.size(0) > G.size(1):
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(0) > G.size(1):
        X = X.T
    return X


_ns_compiled = None


def _compiled_ns():
    global _ns_compiled
    if _ns_compiled is None:
        _ns_compiled = torch.compile(zeropower_via_newtonschulz5)
    return _ns_compiled


class Muon(torch.optim.Optimizer):
    """SGD-momentum (Nesterov) whose update is orthogonalized by Newton-Schulz, then scaled
    by sqrt(max(1, rows/cols)); world size 1. The updates pass through one flat buffer of
    ns_dtype (bf16 in the record) before they are added to the weights."""

    def __init__(self, params, lr=0.05, momentum=0.95, nesterov=True, ns_steps=5,
                 ns_dtype=torch.float32, compile_ns=False):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon takes 2-D matrices only, got shape {tuple(p.shape)}")
        self.ns_dtype = ns_dtype
        self.ns = _compiled_ns() if compile_ns else zeropower_via_newtonschulz5

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            params = group["params"]
            total = sum(p.numel() for p in params)
            updates = torch.zeros(total, device=params[0].device, dtype=self.ns_dtype)
            idx = 0
            for p in params:
                g = p.grad
                if g is None:
                    raise RuntimeError("Muon: a matrix has no gradient (run backward first)")
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(g)
                if group["nesterov"]:
                    g = g.add(buf, alpha=momentum)
                g = self.ns(g, steps=group["ns_steps"], dtype=self.ns_dtype)
                g *= max(1, g.size(0) / g.size(1)) ** 0.5
                updates[idx:idx + p.numel()] = g.flatten()
                idx += p.numel()
            idx = 0
            for p in params:
                g = updates[idx:idx + p.numel()].view_as(p).type_as(p)
                p.add_(g, alpha=-lr)
                idx += p.numel()


# ---------------------------------------------------------------------------------------
# the record's four optimizers

def build_optimizers(model, lr_embed=0.6, lr_head=0.008, lr_scalar=0.04, muon_lr=0.05,
                     betas=(0.8, 0.95), eps=1e-8, momentum=0.85, ns_dtype=torch.float32,
                     fused=False, compile_ns=False):
    """[Adam(wte), Adam(lm_head), Muon(every 2-D matrix in the blocks), Adam(scalars)] in
    the record's order; each group remembers its base lr under 'base_lr'."""
    kw = dict(betas=betas, eps=eps, weight_decay=0.0)
    if fused:
        kw["fused"] = True
    params = list(model.transformer.h.parameters())
    matrix = [p for p in params if p.ndim == 2]
    scalar = [p for p in params if p.ndim < 2] + [model.skip_weights]
    opts = [
        torch.optim.Adam([model.transformer.wte.weight], lr=lr_embed, **kw),
        torch.optim.Adam([model.lm_head.weight], lr=lr_head, **kw),
        Muon(matrix, lr=muon_lr, momentum=momentum, ns_dtype=ns_dtype, compile_ns=compile_ns),
        torch.optim.Adam(scalar, lr=lr_scalar, **kw),
    ]
    for opt in opts:
        for g in opt.param_groups:
            g["base_lr"] = g["lr"]
    return opts


def set_step_hparams(opts, lr_mult, momentum):
    """Every group's lr = base_lr * lr_mult; Muon's momentum = momentum."""
    for opt in opts:
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_mult
        if isinstance(opt, Muon):
            for g in opt.param_groups:
                g["momentum"] = momentum
